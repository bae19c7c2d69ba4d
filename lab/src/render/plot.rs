//! The bench's plots, drawn with plotters' SVG backend: throughput against message size, and the
//! ratios the bench's claims rest on (each path over plain TCP; with two kernels, the second over
//! the first). Every point is the median with a whisker from min to max: of all runs for MB/s, of
//! the per-boot ratios for a ratio, so the whisker is the spread over boots.

use plotters::prelude::*;

use super::bench::size_label;
use crate::bench::{Comparison, KernelBench, Stats, ThroughputSummary, BASELINE, PATHS};
use crate::vm::Accel;

/// One colour per row of [`PATHS`], in its order (tcp black, unix grey, then the four paths).
const COLOURS: [RGBColor; 6] =
    [RGBColor(0, 0, 0), RGBColor(127, 127, 127), RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(255, 127, 14)];
const _: () = assert!(COLOURS.len() == PATHS.len());
const FONT: &str = "sans-serif";

/// A line to draw: one path of one kernel. The second kernel of a pair is drawn faded with
/// triangles, the first solid with dots: the legend gives a colour per path and a style per kernel.
struct Series {
    colour: RGBColor,
    second: bool,
    points: Vec<(f64, Stats)>,
}

/// What a panel shows on its y axis, and whether a ratio's reference line at 1 belongs on it.
struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    ratio: bool,
    /// The reference line's colour: TCP's own over TCP, so the legend's `tcp` names it; grey for
    /// "no change" between kernels, where TCP has a line of its own.
    one: RGBAColor,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// MB/s against message size, log-log, a line per path (per kernel, with two).
pub fn throughput(benches: &[&KernelBench]) -> String {
    let series = kernel_series(benches, |t| t.mb_per_s, |_| true);
    let panel = Panel { title: "MB/s by message size", y_desc: "MB/s, log scale (median; whiskers: min-max of all runs)", ratio: false, one: TRANSPARENT };
    draw((800, 480), &title("sockmap redirect throughput", benches), &subtitle(benches), benches, |root| panel_chart(root, &panel, &series))
}

/// Each path's MB/s over plain TCP's at the same size in the same boot; with a comparison, a
/// second panel with the second kernel over the first, per path (TCP and AF_UNIX included).
pub fn ratios(benches: &[&KernelBench], comparison: Option<&Comparison>) -> String {
    let vs_tcp = kernel_series(benches, |t| t.vs_tcp, |path| path != BASELINE);
    let left = Panel {
        title: "each path / plain TCP (MB/s)",
        y_desc: "ratio, log scale (median; whiskers: min-max over boots)",
        ratio: true,
        one: COLOURS[0].mix(1.0),
    };
    let size = if comparison.is_some() { (1300, 500) } else { (800, 480) };
    draw(size, &title("sockmap redirect throughput ratios", benches), &subtitle(benches), benches, |root| {
        let Some(cmp) = comparison else { return panel_chart(root, &left, &vs_tcp) };
        let half = root.dim_in_pixel().0 / 2;
        let (a, b) = root.split_horizontally(half);
        panel_chart(&a, &left, &vs_tcp)?;
        let title = format!("{} / {} (MB/s, boot i of each paired)", cmp.other, cmp.base);
        let y_desc = "ratio, log scale (median; whiskers: min-max over boot pairs)";
        let right = Panel { title: &title, y_desc, ratio: true, one: BLACK.mix(0.4) };
        panel_chart(&b, &right, &comparison_series(cmp))
    })
}

fn title(what: &str, benches: &[&KernelBench]) -> String {
    let kernels: Vec<String> = benches.iter().map(|b| format!("{} ({})", b.kernel, b.release)).collect();
    format!("{what}: {}", kernels.join(" vs "))
}

fn subtitle(benches: &[&KernelBench]) -> String {
    match benches.first() {
        Some(b) if b.accel == Accel::Tcg => format!("TCG (emulated CPU), {} vCPU: compare the lines, not the absolute MB/s", b.cpus),
        Some(b) => format!("KVM, {} vCPU", b.cpus),
        None => String::new(),
    }
}

fn kernel_series(benches: &[&KernelBench], figure: fn(&ThroughputSummary) -> Option<Stats>, keep: fn(&str) -> bool) -> Vec<Series> {
    let mut series = Vec::new();
    for (k, bench) in benches.iter().enumerate() {
        for (&path, colour) in PATHS.iter().zip(COLOURS).filter(|(p, _)| keep(p)) {
            let points: Vec<(f64, Stats)> =
                bench.throughput.iter().filter(|t| t.path == path).filter_map(|t| Some((t.size as f64, figure(t)?))).collect();
            series.push(Series { colour, second: k > 0, points });
        }
    }
    series
}

fn comparison_series(cmp: &Comparison) -> Vec<Series> {
    PATHS
        .iter()
        .zip(COLOURS)
        .map(|(&path, colour)| Series {
            colour,
            second: false,
            points: cmp.throughput.iter().filter(|r| r.path == path).filter_map(|r| Some((r.size as f64, r.ratio?))).collect(),
        })
        .collect()
}

/// The SVG document: a white page with the title lines, the legend on the right, and `body`
/// drawing the panels in what is left.
fn draw(size: (u32, u32), title: &str, subtitle: &str, benches: &[&KernelBench], body: impl FnOnce(&Area) -> Result<(), String>) -> String {
    let mut svg = String::new();
    let drawn: Result<(), String> = (|| {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        root.draw(&Text::new(title.to_string(), (16, 10), (FONT, 18))).map_err(|e| e.to_string())?;
        root.draw(&Text::new(subtitle.to_string(), (16, 32), (FONT, 14).into_font().color(&RGBColor(85, 85, 85)))).map_err(|e| e.to_string())?;
        let (panels, legend_area) = root.margin(50, 10, 10, 10).split_horizontally(size.0 - 190);
        body(&panels)?;
        legend(&legend_area, benches).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })();
    // Drawing into a String fails only on a plotters bug; the message is then the plot's content.
    if let Err(e) = drawn {
        return format!("<svg xmlns=\"http://www.w3.org/2000/svg\"><text x=\"10\" y=\"20\">plot failed: {}</text></svg>\n", e.replace('<', "&lt;"));
    }
    svg
}

/// A colour per path; with two kernels, then the style of each (solid with dots, faded with triangles).
fn legend(area: &Area, benches: &[&KernelBench]) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let row = |i: usize| 40 + 20 * i as i32;
    for (i, (&path, colour)) in PATHS.iter().zip(COLOURS).enumerate() {
        area.draw(&Rectangle::new([(4, row(i) - 2), (28, row(i) + 2)], colour.filled()))?;
        area.draw(&Text::new(path, (36, row(i) - 7), (FONT, 13)))?;
    }
    if let [first, second] = benches {
        for (k, bench) in [first, second].into_iter().enumerate() {
            let (y, colour) = (row(PATHS.len() + 1 + k), if k == 0 { BLACK.mix(1.0) } else { BLACK.mix(0.45) });
            area.draw(&Rectangle::new([(4, y - 1), (28, y + 1)], colour.filled()))?;
            if k == 0 {
                area.draw(&Circle::new((16, y), 3, colour.filled()))?;
            } else {
                area.draw(&TriangleMarker::new((16, y), 4, colour.filled()))?;
            }
            area.draw(&Text::new(bench.kernel.clone(), (36, y - 7), (FONT, 13)))?;
        }
    }
    Ok(())
}

/// One chart: log-scale axes with the bench's sizes as ticks, a line per series with whiskers, a
/// reference line at 1 for ratios, and the legend.
fn panel_chart(area: &Area, panel: &Panel, series: &[Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut sizes: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let (x0, x1) = match (sizes.first(), sizes.last()) {
        (Some(&a), Some(&b)) if b > a => (a / 1.4, b * 1.4),
        (Some(&a), _) => (a / 2.0, a * 2.0),
        _ => (1.0, 2.0),
    };
    let (y0, y1) = y_range(series, panel.ratio);
    let y_ticks = ticks(y0, y1, panel.ratio);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FONT, 15))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale().with_key_points(sizes), (y0..y1).log_scale().with_key_points(y_ticks))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("message size (log scale)")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x| size_label(x.round() as usize))
        .y_label_formatter(&|y| tick_label(*y))
        .light_line_style(WHITE)
        .label_style((FONT, 12))
        .draw()
        .map_err(|e| err(&e))?;
    if panel.ratio {
        let one = [(x0, 1.0), (x1, 1.0)];
        chart.draw_series(std::iter::once(PathElement::new(one, panel.one))).map_err(|e| err(&e))?;
    }
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        draw_series(&mut chart, s).map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Tick values for a log axis from `lo` to `hi`: 1, 2 and 5 per decade (a ratio also gets 1.5,
/// which is where the patch series' goals lie); thinned to every decade when there are many.
fn ticks(lo: f64, hi: f64, ratio: bool) -> Vec<f64> {
    let steps: &[f64] = if ratio { &[1.0, 1.5, 2.0, 3.0, 5.0] } else { &[1.0, 2.0, 5.0] };
    let decades = (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32);
    let all: Vec<f64> = decades.flat_map(|d| steps.iter().map(move |s| s * 10f64.powi(d))).filter(|v| *v >= lo && *v <= hi).collect();
    if all.len() > 12 {
        all.into_iter().filter(|v| (v.log10() - v.log10().round()).abs() < 1e-9).collect()
    } else {
        all
    }
}

fn y_range(series: &[Series], ratio: bool) -> (f64, f64) {
    let (lo, hi) = series.iter().flat_map(|s| &s.points).fold((f64::MAX, f64::MIN), |(lo, hi), (_, st)| (lo.min(st.min), hi.max(st.max)));
    let (lo, hi) = if lo > hi { (1.0, 1.0) } else { (lo.max(1e-6), hi.max(1e-6)) };
    // A ratio's axis always shows 1, the line it is read against.
    let (lo, hi) = if ratio { (lo.min(1.0), hi.max(1.0)) } else { (lo, hi) };
    (lo / 1.3, hi * 1.3)
}

/// A series' line through the medians, its whiskers and its markers. The line is
/// the one `<polyline>` of a series (the SVG smoke test counts them); whiskers are plain lines.
fn draw_series<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, s: &Series) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    let colour = if s.second { s.colour.mix(0.45) } else { s.colour.mix(1.0) };
    let line = s.points.iter().map(|(x, st)| (*x, st.median));
    chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
    chart.draw_series(s.points.iter().map(|(x, st)| ErrorBar::new_vertical(*x, st.min, st.median, st.max, colour.stroke_width(1), 6)))?;
    if s.second {
        chart.draw_series(s.points.iter().map(|(x, st)| TriangleMarker::new((*x, st.median), 4, colour.filled())))?;
    } else {
        chart.draw_series(s.points.iter().map(|(x, st)| Circle::new((*x, st.median), 3, colour.filled())))?;
    }
    Ok(())
}

/// A tick's value without trailing zeros: 0.15, 1.5, 100.
fn tick_label(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
