//! Group commit: writers hand "make everything up to index N durable, then call me back" to
//! one flusher thread; it takes every request queued behind the first, runs one `fdatasync`
//! per file for all of them, and only then answers them in order.
//!
//! An fsync error is fatal for the log: after a failed fsync the kernel may have dropped the
//! dirty pages, so retrying and succeeding proves nothing. The flusher poisons itself, answers
//! every waiting and later request with the error, and the log refuses further appends.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Called once the records are durable (`Ok`) or can never be (`Err` with the reason).
pub type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Request {
    file: Arc<File>,
    path: PathBuf,
    /// Every index below this is durable once `file` is synced.
    upto: u64,
    done: Done,
}

pub struct Flusher {
    tx: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    poisoned: Arc<Mutex<Option<String>>>,
}

impl Flusher {
    pub fn start(durable: Arc<AtomicU64>) -> Flusher {
        let (tx, rx) = crossbeam_channel::unbounded();
        let poisoned = Arc::new(Mutex::new(None));
        let p = poisoned.clone();
        let thread = std::thread::Builder::new()
            .name("tally-flusher".into())
            .spawn(move || run(rx, durable, p))
            .expect("spawn flusher thread");
        Flusher { tx: Some(tx), thread: Some(thread), poisoned }
    }

    /// The reason the log stopped accepting writes, if it did.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().expect("poison lock").clone()
    }

    pub fn request(&self, file: Arc<File>, path: PathBuf, upto: u64, done: Done) {
        let req = Request { file, path, upto, done };
        if let Err(e) = self.tx.as_ref().expect("running").send(req) {
            (e.into_inner().done)(Err("the flusher has stopped".into()));
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Request>, durable: Arc<AtomicU64>, poisoned: Arc<Mutex<Option<String>>>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let already = poisoned.lock().expect("poison lock").clone();
        let result = match already {
            Some(reason) => Err(reason),
            None => sync_all(&group),
        };
        match &result {
            Ok(()) => {
                let upto = group.iter().map(|r| r.upto).max().unwrap_or(0);
                durable.fetch_max(upto, Ordering::AcqRel);
            }
            Err(reason) => {
                let mut p = poisoned.lock().expect("poison lock");
                p.get_or_insert_with(|| reason.clone());
            }
        }
        for r in group {
            (r.done)(result.clone());
        }
    }
}

fn sync_all(group: &[Request]) -> Result<(), String> {
    let mut synced: Vec<*const File> = Vec::new();
    for r in group {
        let ptr = Arc::as_ptr(&r.file);
        if synced.contains(&ptr) {
            continue;
        }
        r.file.sync_data().map_err(|e| format!("fdatasync of {} failed: {e}", r.path.display()))?;
        synced.push(ptr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A pipe cannot be fsynced (EINVAL): a stand-in for a disk whose fsync fails.
    fn unsyncable() -> Arc<File> {
        let (reader, _writer) = std::io::pipe().unwrap();
        Arc::new(File::from(std::os::fd::OwnedFd::from(reader)))
    }

    fn request(f: &Flusher, file: Arc<File>, upto: u64) -> mpsc::Receiver<Result<(), String>> {
        let (tx, rx) = mpsc::channel();
        f.request(file, "test".into(), upto, Box::new(move |r| tx.send(r).unwrap()));
        rx
    }

    #[test]
    fn durable_index_moves_only_after_a_good_fsync() {
        let durable = Arc::new(AtomicU64::new(0));
        let f = Flusher::start(durable.clone());
        let file = Arc::new(tempfile::tempfile().unwrap());
        assert_eq!(request(&f, file, 7).recv().unwrap(), Ok(()));
        assert_eq!(durable.load(Ordering::Acquire), 7);
        assert_eq!(f.poisoned(), None);
    }

    #[test]
    fn an_fsync_failure_is_fatal_and_never_retried() {
        let durable = Arc::new(AtomicU64::new(0));
        let f = Flusher::start(durable.clone());
        let err = request(&f, unsyncable(), 5).recv().unwrap().unwrap_err();
        assert!(err.contains("fdatasync"), "{err}");
        assert_eq!(durable.load(Ordering::Acquire), 0, "nothing became durable");
        // Later requests fail too, even on a file that could be synced.
        let good = Arc::new(tempfile::tempfile().unwrap());
        assert_eq!(request(&f, good, 9).recv().unwrap(), Err(err.clone()));
        assert_eq!(f.poisoned(), Some(err));
        assert_eq!(durable.load(Ordering::Acquire), 0);
    }
}
