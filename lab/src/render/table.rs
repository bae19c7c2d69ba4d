//! Terminal and Markdown tables, the one place their layout is decided. Terminal columns are sized
//! to their widest cell by comfy-table, so a long kernel name widens its column instead of pushing
//! the rest of its row out of line.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// How a column's cells line up: names to the left, figures to the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A borderless table for the terminal: two spaces between columns, no trailing blanks. `align`
/// gives each column's alignment (missing ones are left-aligned); a cell may hold several lines.
pub fn plain(header: &[&str], rows: &[Vec<String>], align: &[Align]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        // No padding before the first column: the table starts at the left margin like the text.
        column.set_padding((u16::from(i > 0), 1));
        if align.get(i) == Some(&Align::Right) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out: String = table.lines().map(|l| l.trim_end().to_string() + "\n").collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

/// A GitHub Markdown table; `|` in a cell is escaped so it cannot open a column.
pub fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        out.push_str(&line(row.iter().map(|c| c.replace('|', "\\|")).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![vec!["mutant-rx-direct-overtakes-backlog".to_string(), "7".into()], vec!["a".into(), "12".into()]];
        let text = plain(&["KERNEL", "N"], &rows, &[Align::Left, Align::Right]);
        let lines: Vec<&str> = text.lines().collect();
        let long = "mutant-rx-direct-overtakes-backlog";
        assert_eq!(lines, [format!("{:<34}  {:>2}", "KERNEL", "N"), format!("{long}   7"), format!("{:<34}  12", "a")]);
        assert_eq!(markdown(&["a", "b"], &[vec!["x|y".into(), "z".into()]]), "| a | b |\n|---|---|\n| x\\|y | z |\n");
    }
}
