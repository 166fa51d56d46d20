//! htb, the hierarchical token bucket, as the root of every qdisc fault: one class for unmatched
//! traffic (the default, effectively unlimited) and one that the fault's steering table puts
//! the matched packets into (by their priority): capped for a bandwidth fault (with a bfifo of
//! the fault's queue limit as its leaf), or unlimited with netem as its leaf.
//!
//! The cap sits in the htb class rather than in a tbf leaf because htb expects its leaves to
//! send whenever they hold packets: a tbf leaf works, but the kernel logs "htb: tbf qdisc 2: is
//! non-work-conserving?" for each one. netem leaves have no alternative (and get that line).
//!
//! Options are encoded as `tc qdisc add ... htb default 1` and `tc class add ... htb rate R
//! ceil C burst B cburst CB quantum Q` encode them.

use super::netlink::{Message, TCA_OPTIONS};
use super::psched::{Psched, rate_table};

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_CTAB: u16 = 3;
const TCA_HTB_RTAB: u16 = 4;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;

/// `TC_HTB_PROTOVER`.
const HTB_VERSION: u32 = 3;
/// tc's default "rate to quantum" divisor (unused: our classes set their quantum).
const HTB_RATE2QUANTUM: u32 = 10;
/// tc's default packet size for htb rate tables.
const HTB_MTU: u32 = 1600;

/// Appends the root's `TCA_OPTIONS`: unclassified packets go to class `default_minor`.
pub(crate) fn write_root_options(msg: &mut Message, default_minor: u32) {
    let mut glob = Vec::with_capacity(20);
    glob.extend_from_slice(&HTB_VERSION.to_ne_bytes());
    glob.extend_from_slice(&HTB_RATE2QUANTUM.to_ne_bytes());
    glob.extend_from_slice(&default_minor.to_ne_bytes());
    glob.extend_from_slice(&0u32.to_ne_bytes()); // debug
    glob.extend_from_slice(&0u32.to_ne_bytes()); // direct_pkts
    let nest = msg.begin_nest(TCA_OPTIONS);
    msg.attr(TCA_HTB_INIT, &glob);
    msg.end_nest(nest);
}

/// One htb class: guaranteed `rate`, at most `ceil` (bytes/s), with their buckets in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HtbClass {
    pub rate: u64,
    pub ceil: u64,
    pub burst: u32,
    pub cburst: u32,
    pub quantum: u32,
}

impl HtbClass {
    /// A class that never holds traffic back: 100 Gbit/s, far above what a veth carries. Its
    /// quantum is set so that the kernel does not warn that a quantum derived from such a
    /// rate is too big.
    pub(crate) const UNLIMITED: HtbClass = HtbClass {
        rate: 12_500_000_000,
        ceil: 12_500_000_000,
        burst: 1 << 20,
        cburst: 1 << 20,
        quantum: 200_000,
    };

    /// A class capped at `rate` bytes/s with a bucket of `burst` bytes, borrowing nothing.
    pub(crate) fn capped(rate: u64, burst: u32) -> Self {
        HtbClass {
            rate,
            ceil: rate,
            burst,
            cburst: burst,
            quantum: Self::UNLIMITED.quantum,
        }
    }

    /// Appends `TCA_OPTIONS` as tc does.
    pub(crate) fn write_options(&self, msg: &mut Message, psched: &Psched) {
        let (rate_spec, rtab) = rate_table(psched, self.rate, HTB_MTU);
        let (ceil_spec, ctab) = rate_table(psched, self.ceil, HTB_MTU);
        let mut opt = Vec::with_capacity(44);
        opt.extend_from_slice(&rate_spec.to_bytes());
        opt.extend_from_slice(&ceil_spec.to_bytes());
        // Unlike tbf, tc computes htb's bucket ticks from the 64-bit rates.
        let buffer = psched.xmittime(self.rate, u64::from(self.burst));
        let cbuffer = psched.xmittime(self.ceil, u64::from(self.cburst));
        opt.extend_from_slice(&buffer.to_ne_bytes());
        opt.extend_from_slice(&cbuffer.to_ne_bytes());
        opt.extend_from_slice(&self.quantum.to_ne_bytes());
        opt.extend_from_slice(&0u32.to_ne_bytes()); // level
        opt.extend_from_slice(&0u32.to_ne_bytes()); // prio

        let nest = msg.begin_nest(TCA_OPTIONS);
        if self.rate >= 1 << 32 {
            msg.attr_u64(TCA_HTB_RATE64, self.rate);
        }
        if self.ceil >= 1 << 32 {
            msg.attr_u64(TCA_HTB_CEIL64, self.ceil);
        }
        msg.attr(TCA_HTB_PARMS, &opt);
        msg.attr(TCA_HTB_RTAB, &rtab);
        msg.attr(TCA_HTB_CTAB, &ctab);
        msg.end_nest(nest);
    }
}

/// Appends a pfifo's or bfifo's `TCA_OPTIONS` (`struct tc_fifo_qopt`, not nested): at most
/// `limit` packets (pfifo) or bytes (bfifo) queued. Both classes get one explicitly, because
/// htb's implicit leaf queues `txqueuelen` packets, and some CNIs set that to 0 on veths.
pub(crate) fn write_fifo_options(msg: &mut Message, limit: u32) {
    msg.attr(TCA_OPTIONS, &limit.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{assert_same_request, load};
    use super::super::netlink::{TC_H_ROOT, TcHeader, Verb};
    use super::*;

    #[test]
    fn the_htb_root_is_encoded_as_tc_encodes_it() {
        // tc qdisc add dev lo root handle fa17: htb default 1
        let fixture = load("htb_root");
        let tcm = TcHeader {
            handle: 0xfa17_0000,
            parent: TC_H_ROOT,
            ..TcHeader::default()
        };
        let mut msg = Message::new_qdisc(Verb::Add, tcm, "htb", "t".into());
        write_root_options(&mut msg, 1);
        assert_same_request(&fixture, &msg);
    }

    #[test]
    fn unlimited_classes_are_encoded_as_tc_encodes_them() {
        // tc class add dev lo parent fa17: classid fa17:N htb rate 100gbit ceil 100gbit
        //   burst 1048576 cburst 1048576 quantum 200000
        for (fixture, minor) in [("htb_class_unlimited", 1), ("htb_class_scoped", 2)] {
            let fixture = load(fixture);
            let tcm = TcHeader {
                handle: 0xfa17_0000 | minor,
                parent: 0xfa17_0000,
                ..TcHeader::default()
            };
            let mut msg = Message::new_class(Verb::Add, tcm, "htb", "t".into());
            HtbClass::UNLIMITED.write_options(&mut msg, &fixture.psched);
            assert_same_request(&fixture, &msg);
        }
    }

    #[test]
    fn the_default_class_leaf_is_encoded_as_tc_encodes_it() {
        // tc qdisc add dev lo parent fa17:1 handle 1: pfifo limit 1000
        let fixture = load("pfifo_leaf");
        let tcm = TcHeader {
            handle: 0x0001_0000,
            parent: 0xfa17_0001,
            ..TcHeader::default()
        };
        let mut msg = Message::new_qdisc(Verb::Add, tcm, "pfifo", "t".into());
        write_fifo_options(&mut msg, 1000);
        assert_same_request(&fixture, &msg);
    }

    #[test]
    fn a_capped_class_and_its_byte_queue_are_encoded_as_tc_encodes_them() {
        // tc class add dev lo parent fa17: classid fa17:2 htb rate 8mbit ceil 8mbit
        //   burst 16384 cburst 16384 quantum 200000
        let fixture = load("htb_class_capped");
        let tcm = TcHeader {
            handle: 0xfa17_0002,
            parent: 0xfa17_0000,
            ..TcHeader::default()
        };
        let mut msg = Message::new_class(Verb::Add, tcm, "htb", "t".into());
        HtbClass::capped(1_000_000, 16_384).write_options(&mut msg, &fixture.psched);
        assert_same_request(&fixture, &msg);

        // tc qdisc add dev lo parent fa17:2 handle 2: bfifo limit 116384
        let fixture = load("bfifo_leaf");
        let tcm = TcHeader {
            handle: 0x0002_0000,
            parent: 0xfa17_0002,
            ..TcHeader::default()
        };
        let mut msg = Message::new_qdisc(Verb::Add, tcm, "bfifo", "t".into());
        write_fifo_options(&mut msg, 116_384);
        assert_same_request(&fixture, &msg);
    }
}
