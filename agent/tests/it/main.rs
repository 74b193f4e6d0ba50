//! The agent's integration tests, against the real services `tests/env/setup.sh` starts.

mod snapshots;
