//! The NAT port search policy: which ports to try, in order, for an expectation whose
//! announced port may be taken on the translated address (another inside host announced
//! it, EBUSY/EEXIST). Pure: `daemon/effects.rs` asks the kernel for each candidate.
//!
//! - A single port: the announced one, then the next ones (the kernel's
//!   nf_nat_exp_find_port).
//! - An RTP/RTCP pair: RTP on the announced port and RTCP on the one after; then RTP on
//!   the next even ports (nf_nat_sip's nf_nat_sdp_media moves pairs in steps of two).
//!
//! At most [`NAT_PORT_ATTEMPTS`] candidates, never past 65535 (for a pair: RTCP's port
//! included), never wrapping around to low ports.

/// How many candidates a search tries (the kernel tries 128).
pub const NAT_PORT_ATTEMPTS: u16 = 128;

/// What is searched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Only the announced port (no search: an expectation created after its packet was
    /// sent naming that port).
    Fixed,
    Single,
    /// An RTP port; RTCP takes the one after it.
    Pair,
}

/// The candidates of one search, in order (an iterator of ports; for a pair, RTP ports).
#[derive(Clone, Copy, Debug)]
pub struct Search {
    next: Option<u16>,
    shape: Shape,
    left: u16,
}

impl Search {
    pub fn new(shape: Shape, announced: u16) -> Search {
        let left = match shape {
            Shape::Fixed => 1,
            Shape::Single | Shape::Pair => NAT_PORT_ATTEMPTS,
        };
        let first = match shape {
            // RTCP must fit too.
            Shape::Pair => announced.checked_add(1).map(|_| announced),
            Shape::Fixed | Shape::Single => Some(announced),
        };
        Search {
            next: first,
            shape,
            left,
        }
    }

    /// The candidate after `port`.
    fn after(&self, port: u16) -> Option<u16> {
        match self.shape {
            Shape::Fixed => None,
            Shape::Single => port.checked_add(1),
            Shape::Pair => {
                // The next even port; its RTCP partner must fit as well.
                let rtp = port.checked_add(2 - port % 2)?;
                rtp.checked_add(1).map(|_| rtp)
            }
        }
    }
}

impl Iterator for Search {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.left == 0 {
            return None;
        }
        let port = self.next?;
        self.left -= 1;
        self.next = self.after(port);
        Some(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn all(shape: Shape, announced: u16) -> Vec<u16> {
        Search::new(shape, announced).collect()
    }

    #[test]
    fn a_single_port_moves_up_by_one_for_128_tries() {
        let ports = all(Shape::Single, 40000);
        assert_eq!(ports.len(), usize::from(NAT_PORT_ATTEMPTS));
        assert_eq!(ports[..3], [40000, 40001, 40002]);
        assert_eq!(ports.last(), Some(&(40000 + NAT_PORT_ATTEMPTS - 1)));
    }

    #[test]
    fn searches_stop_at_65535_without_wrapping() {
        assert_eq!(all(Shape::Single, 65535), [65535]);
        assert_eq!(all(Shape::Single, 65533), [65533, 65534, 65535]);
        assert_eq!(
            all(Shape::Pair, 65535),
            Vec::<u16>::new(),
            "no room for RTCP"
        );
        assert_eq!(all(Shape::Pair, 65534), [65534]);
        assert_eq!(all(Shape::Pair, 65530), [65530, 65532, 65534]);
        assert_eq!(all(Shape::Single, 0).len(), usize::from(NAT_PORT_ATTEMPTS));
    }

    #[test]
    fn a_pair_moves_to_even_rtp_ports() {
        let ports = all(Shape::Pair, 5004);
        assert_eq!(ports.len(), usize::from(NAT_PORT_ATTEMPTS));
        assert_eq!(ports[..3], [5004, 5006, 5008]);
        // An odd announced RTP port is tried as it is, then the search is on even ports.
        assert_eq!(all(Shape::Pair, 5005)[..3], [5005, 5006, 5008]);
        assert!(all(Shape::Pair, 5005)[1..].iter().all(|p| p % 2 == 0));
    }

    #[test]
    fn a_fixed_port_is_tried_once() {
        assert_eq!(all(Shape::Fixed, 5004), [5004]);
        assert_eq!(all(Shape::Fixed, 65535), [65535]);
    }
}
