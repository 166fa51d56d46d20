//! The node agent (`faultline agent --node NAME`): carries out FaultInjections inside pod
//! network namespaces on its node and keeps the promise that no fault outlives its experiment.
//!
//! Module map:
//! - [`tag`]: the name every kernel object faultline creates carries, so the agent can recognise
//!   its own rules (and never touches anyone else's).
//! - [`netns`]: entering a network namespace on a dedicated thread.
//! - [`podfind`]: finding a pod's network namespace from its UID through `/proc/*/cgroup`.
//! - [`nft`], [`iptables`]: partitions (and kernel-side loss) with nftables, iptables as fallback.
//! - [`nfqueue`]: the userspace delay/loss path for kernels without `sch_netem`.
//! - [`tc`]: qdiscs through rtnetlink (our own messages): tbf (bandwidth), netem (latency,
//!   loss), and htb with u32 filters when a fault is scoped to destinations.
//! - [`residual`]: snapshots of a namespace's rules before a fault and the difference after.
//! - [`admission`]: whether the agent may act on a work item, and keep its fault in place:
//!   experiment, node, pause switch, namespace opt-in, protected pods (pure).
//! - [`facts`]: the watch caches those checks read (the node's pods, namespaces, pause).
//! - [`converge`]: what to apply and revert, decided from live injections, the journal and the
//!   clock (pure).
//! - [`journal`]: the on-disk record that lets a restarted agent revert without the API server.
//! - [`kernel`]: the seam between decisions and the kernel (a trait; the Linux implementation
//!   dispatches to the mechanisms).
//! - [`linux`]: the Linux kernel behind the seam: pod namespaces, mechanisms, residue.
//! - [`runner`]: the agent process: watches FaultInjections, executes plans, reports status
//!   (through `writeback`).
//! - [`testnet`]: throwaway network namespaces for root tests and benchmarks.
pub mod admission;
pub mod closer;
pub mod converge;
pub mod deadline;
pub mod facts;
pub mod iptables;
pub mod journal;
pub mod kernel;
pub mod links;
pub mod linux;
pub mod netns;
pub mod nfqueue;
pub mod nft;
pub mod nftables;
pub mod podfind;
pub mod residual;
pub mod runner;
pub mod scope;
pub mod tag;
pub mod tc;
pub mod telemetry;
pub mod testnet;
mod writeback;
