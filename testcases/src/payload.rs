//! What the cases send: a byte pattern that makes any drop, duplication or reordering visible.

use crate::family::Family;

/// Byte `offset` of every stream the suite sends. 251 is prime and does not divide any message size
/// used, so a chunk that lands at the wrong offset does not line up with the pattern by accident.
pub fn pattern_byte(offset: usize) -> u8 {
    ((offset * 31 + 7) % 251) as u8
}

/// Bytes `start..start + len` of the pattern.
pub fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(pattern_byte).collect()
}

/// The data-path matrix's payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    OneByte,
    OneKib,
    SixtyFourKib,
    OneMib,
    /// 1000 sends of 16 bytes: many small messages rather than one large one.
    ThousandSmall,
}

impl Payload {
    pub fn name(self) -> &'static str {
        match self {
            Self::OneByte => "1b",
            Self::OneKib => "1kib",
            Self::SixtyFourKib => "64kib",
            Self::OneMib => "1mib",
            Self::ThousandSmall => "1000x16b",
        }
    }

    /// The size of each send call, in order.
    pub fn messages(self, family: Family) -> Vec<usize> {
        let single = |len: usize| match family.datagram_limit() {
            Some(limit) => (0..len).step_by(limit).map(|start| limit.min(len - start)).collect(),
            None => vec![len],
        };
        match self {
            Self::OneByte => single(1),
            Self::OneKib => single(1024),
            Self::SixtyFourKib => single(64 * 1024),
            Self::OneMib => single(1024 * 1024),
            Self::ThousandSmall => vec![16; 1000],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_families_split_large_payloads() {
        assert_eq!(Payload::OneMib.messages(Family::Ipv4), vec![1 << 20]);
        assert_eq!(Payload::OneMib.messages(Family::Udp).len(), 64);
        assert_eq!(Payload::OneKib.messages(Family::UnixDgram), vec![1024]);
        assert_eq!(Payload::ThousandSmall.messages(Family::Vsock).iter().sum::<usize>(), 16_000);
    }

    #[test]
    fn pattern_does_not_repeat_within_a_period() {
        let period = pattern(0, 251);
        let mut sorted = period.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 251);
    }
}
