//! openraft's storage conformance suite over the real segmented log and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tally_storage::raft::{LogStore, NodeId, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = LogStore::open(&dir.path().join("log"), 64 * 1024).expect("open log");
        let (sm, _) = StateMachine::open(dir.path(), log.clone()).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_test_all() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
