//! Server processes owned by a test: logged to a file, stopped on drop, and killed by the
//! kernel if the test process dies first.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{HarnessError, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// All children are forked from one thread that lives as long as the test process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process; a
/// test thread or a Tokio blocking thread may exit long before the server should stop. Forking
/// from this thread ties each server to the life of the test process, and `Drop` ties it to the
/// value that owns it.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("tailor-harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the harness spawner thread: {e}"));
        Mutex::new(tx)
    })
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// A running server process.
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `program args...` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// Starts `program args...` with extra environment variables.
    pub fn spawn_with_env(
        name: &'static str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        let out =
            File::create(log).map_err(HarnessError::io(format!("create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io(format!("clone {}", log.display())))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| HarnessError::Other("harness spawner lock poisoned".into()))?
            .send((cmd, reply_tx))
            .map_err(|_| HarnessError::Other("harness spawner thread is gone".into()))?;
        let child = reply_rx
            .recv()
            .map_err(|_| HarnessError::Other("harness spawner thread is gone".into()))?
            .map_err(HarnessError::io(format!("spawn {}", program.display())))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let Ok(file) = File::open(&self.log) else {
            return String::new();
        };
        let mut tail = VecDeque::with_capacity(n);
        for line in BufReader::new(file).lines().map_while(std::io::Result::ok) {
            if tail.len() == n {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        Vec::from(tail).join("\n")
    }

    /// A startup error carrying the log tail.
    pub fn startup_error(&self, reason: impl Into<String>) -> HarnessError {
        HarnessError::Startup {
            what: self.name,
            reason: reason.into(),
            log: self.log_tail(30),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the process to end.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
