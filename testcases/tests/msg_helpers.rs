//! sk_msg helpers across pages and scatterlist elements (issue 13, family 1): pull, push and pop at
//! offsets that cross a page inside an element, the boundary between two elements, the pushed
//! element, and the ends of the message, on one message sent as several iovecs; pop beyond the end
//! fails with the kernel's errno and leaves the message alone. Runs only inside a lab guest.
//!
//! The message is one sendmsg() of MESSAGE bytes from a fresh thread, whose page fragment starts
//! empty: tcp_bpf_sendmsg() copies it into SK_MSG elements cut at 32 KiB fragment boundaries (at
//! every page if the kernel had to fall back to order-0 pages), so 32000..34000 crosses an element
//! and 4096..9182 crosses pages. A push splits the element it lands in: [..at] [pushed] [at..].
//! Names: "<path>_via_sockhash_over_ipv4_<edit>".

use rstest::rstest;
use testcases::Family::Ipv4;
use testcases::MapKind::Sockhash;
use testcases::Path::{self, TxToRx, TxToTx};
use testcases::{pattern, run_case, Config, Scenario, PUSH_FILL};

const IOVECS: [usize; 4] = [1000, 3000, 5000, 40000];
const MESSAGE: usize = 49000;
const PAGE: usize = 4096;
const ELEMENT: usize = 32 * 1024;
const PUSH_LEN: usize = 8;

#[derive(Clone, Copy, Debug)]
enum Edit {
    PullAcrossPages,
    PullAcrossElements,
    PushAtPage,
    PushThenPull,
    PopPageAtPage,
    PopAcrossElements,
    PopFront,
    PopTail,
    PushThenPopOverlapping,
    PopBeyondEnd,
    PopFromEnd,
}

impl Edit {
    fn name(self) -> &'static str {
        match self {
            Self::PullAcrossPages => "pull_across_pages",
            Self::PullAcrossElements => "pull_across_elements",
            Self::PushAtPage => "push_at_a_page_boundary",
            Self::PushThenPull => "push_then_pull_across_it",
            Self::PopPageAtPage => "pop_a_page_at_a_page",
            Self::PopAcrossElements => "pop_across_elements",
            Self::PopFront => "pop_front_trim",
            Self::PopTail => "pop_tail_trim",
            Self::PushThenPopOverlapping => "push_then_pop_overlapping",
            Self::PopBeyondEnd => "pop_beyond_the_end",
            Self::PopFromEnd => "pop_starting_at_the_end",
        }
    }

    /// (pull start..end, push at, pop start+len), as the program applies them: push, pull, pop.
    fn config(self, base: Config) -> Config {
        let pull = |start: usize, end: usize| Config { pull_start: start as u32, pull_end: end as u32, ..base };
        let push = |config: Config| Config { push_start: PAGE as u32, push_len: PUSH_LEN as u32, ..config };
        let pop = |config: Config, start: usize, len: usize| Config { pop_start: start as u32, pop_len: len as u32, ..config };
        match self {
            Self::PullAcrossPages => pull(PAGE, 9182),
            Self::PullAcrossElements => pull(32000, 34000),
            Self::PushAtPage => push(base),
            Self::PushThenPull => push(pull(4000, 4200)),
            Self::PopPageAtPage => pop(base, PAGE, PAGE),
            Self::PopAcrossElements => pop(base, 32000, 2000),
            Self::PopFront => pop(base, 0, 100),
            Self::PopTail => pop(base, MESSAGE - 100, 100),
            Self::PushThenPopOverlapping => pop(push(base), PAGE - 6, 20),
            Self::PopBeyondEnd => pop(base, MESSAGE - 50, 100),
            Self::PopFromEnd => pop(base, MESSAGE, 1),
        }
    }

    /// What the receiver must read: the message with the edit applied.
    fn expected(self) -> Vec<u8> {
        let sent = pattern(0, MESSAGE);
        let pushed = || {
            let mut out = sent[..PAGE].to_vec();
            out.extend([PUSH_FILL; PUSH_LEN]);
            out.extend(&sent[PAGE..]);
            out
        };
        let popped = |data: &[u8], start: usize, len: usize| [&data[..start], &data[start + len..]].concat();
        match self {
            Self::PullAcrossPages | Self::PullAcrossElements | Self::PopBeyondEnd | Self::PopFromEnd => sent,
            Self::PushAtPage | Self::PushThenPull => pushed(),
            Self::PopPageAtPage => popped(&sent, PAGE, PAGE),
            Self::PopAcrossElements => popped(&sent, 32000, 2000),
            Self::PopFront => popped(&sent, 0, 100),
            Self::PopTail => popped(&sent, MESSAGE - 100, 100),
            Self::PushThenPopOverlapping => popped(&pushed(), PAGE - 6, 20),
        }
    }
}

fn helper_case(path: Path, edit: Edit) {
    assert_eq!(IOVECS.iter().sum::<usize>(), MESSAGE);
    assert!(32000 < ELEMENT && ELEMENT < 34000, "the element-crossing edits straddle 32 KiB");
    let scenario = Scenario::new(path, Sockhash, Ipv4);
    run_case(&scenario.case_name(edit.name()), scenario, edit.config(scenario.config()), |rig| {
        rig.pin_verdict_runs();
        rig.expect(path.receiver(), &edit.expected());
        rig.send_iovecs(path.sender(), &IOVECS);
        rig.receive(path.receiver());
    });
}

#[rstest]
fn helpers_tx_to_rx(
    #[values(
        Edit::PullAcrossPages,
        Edit::PullAcrossElements,
        Edit::PushAtPage,
        Edit::PushThenPull,
        Edit::PopPageAtPage,
        Edit::PopAcrossElements,
        Edit::PopFront,
        Edit::PopTail,
        Edit::PushThenPopOverlapping,
        Edit::PopBeyondEnd,
        Edit::PopFromEnd
    )]
    edit: Edit,
) {
    helper_case(TxToRx, edit);
}

/// The same edits before an egress redirect: the edited scatterlist is pushed out of B by
/// tcp_bpf_push() element by element instead of being queued.
#[rstest]
fn helpers_tx_to_tx(
    #[values(Edit::PushThenPull, Edit::PopAcrossElements, Edit::PopFront, Edit::PushThenPopOverlapping)] edit: Edit,
) {
    helper_case(TxToTx, edit);
}
