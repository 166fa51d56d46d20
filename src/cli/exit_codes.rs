//! What each command's `--help` says about its exit codes (clap's `after_help`). The codes
//! themselves are decided in each command's module; keep these in step with them.

pub(super) const TOP_EXIT_CODES: &str = "Exit codes (each command's --help lists its own):
  0  success; for `run`, every experiment passed
  1  a hypothesis failed (`validate`: a document is invalid; `sandbox status`: not running)
  2  an experiment was aborted, or `run` was interrupted
  3  usage error, invalid manifest, cluster error or timeout
  4  inconclusive: no fault went in, the hypothesis was not tested
  5  an experiment could not run: its preflight refused it, nothing was injected";

pub(super) const RUN_EXIT_CODES: &str = "Exit codes:
  0  every experiment Passed (with --dry-run: would run); without --wait: created
  1  a hypothesis failed (verdict Failed)
  2  an experiment was Aborted, or the run was interrupted (Ctrl-C or SIGTERM abort it first)
  3  usage error, invalid manifest, cluster error, timeout, or verdict Error
  4  an experiment was Inconclusive: no fault went in, so its hypothesis was not tested
  5  an experiment could not run: its preflight refused it (no pod matched, a selection over
     the cap, no agent able to inject), nothing was injected
With several experiments the most serious wins, in this order: 3, 2, 1, 5, 4, 0.";

pub(super) const VALIDATE_EXIT_CODES: &str = "Exit codes:
  0  every document is valid
  1  at least one document is invalid
  3  usage error: a path that does not exist or cannot be read, a directory without
     manifests, a file over the size limit";

pub(super) const ABORT_EXIT_CODES: &str = "Exit codes:
  0  abort requested, or the experiment was already aborting
  3  usage error, not found, already ended (nothing to abort), or cluster error";

pub(super) const REPORT_EXIT_CODES: &str = "Exit codes:
  0  the report was written
  3  usage error, not found, or cluster error";

pub(super) const LISTED_EXIT_CODES: &str = "Exit codes:
  0  listed (also when there is nothing to list)
  3  usage or cluster error";

pub(super) const DONE_EXIT_CODES: &str = "Exit codes:
  0  done
  3  usage error, or the cluster or a file could not be written";

pub(super) const SERVER_EXIT_CODES: &str = "Exit codes:
  0  stopped by Ctrl-C or SIGTERM
  3  usage error, or a failure that stopped it";

pub(super) const SANDBOX_EXIT_CODES: &str = "Exit codes:
  0  done (`status`: the sandbox is running)
  1  `status`: the sandbox is not running
  3  usage error, or a failure to start or stop it";
