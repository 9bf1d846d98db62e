//! Server processes the suite starts for itself: a 3-node Folio group of `folio server` children
//! on 127.0.0.1 with their own data directories, the lookup of the `folio` binary they run, and
//! the helpers shared with the etcd baseline (free ports, child processes that die with the suite,
//! startup checks).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use folio_client::Client;

/// Longest a group (or etcd cluster) may take to elect a leader after its processes start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a dead child's log shown in the error.
const LOG_TAIL_LINES: usize = 20;

/// Where a group flushes segments.
#[derive(Clone, Debug)]
pub enum StoreSpec {
    /// A directory per group under `root`.
    Local { root: PathBuf },
    /// An existing S3 bucket; each group writes under `prefix` plus its own name.
    S3 {
        endpoint: String,
        bucket: String,
        region: String,
        prefix: String,
    },
}

/// Where a benchmark that starts its own `folio server` processes runs them: the command-line
/// options the suite, `history` and `lifecycle` share.
#[derive(clap::Args, Clone, Debug)]
pub struct LocalRunArgs {
    /// Where the run's own directory (node data, configs, logs, a local store, and the fsync
    /// floor's file) is made [default: $TMPDIR]. Put it on the disk under test, with room for
    /// what the run writes.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the work directory after the run.
    #[arg(long)]
    pub keep: bool,
    /// The `folio` binary the started groups run [default: the `folio` next to this binary,
    /// else the first on PATH].
    #[arg(long, value_name = "PATH")]
    pub folio_bin: Option<PathBuf>,
}

impl LocalRunArgs {
    /// A work directory of the run's own, named after `name`, under `--work-dir`.
    pub fn work(&self, name: &str) -> anyhow::Result<WorkDir> {
        WorkDir::create(self.work_dir.as_deref(), name, self.keep)
    }

    /// The `folio` binary to start.
    pub fn folio_bin(&self) -> anyhow::Result<PathBuf> {
        find_folio_bin(self.folio_bin.as_deref())
    }
}

/// Where a benchmark's groups flush: the command-line options every benchmark shares.
#[derive(clap::Args, Clone, Debug)]
pub struct S3Args {
    /// Flush to this S3-compatible endpoint instead of a local directory.
    #[arg(long, env = "FOLIO_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// An existing bucket at `--s3-endpoint`.
    #[arg(long, env = "FOLIO_S3_BUCKET", requires = "s3_endpoint")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "FOLIO_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Key prefix [default: folio-bench/<time>-<pid>/].
    #[arg(long)]
    pub s3_prefix: Option<String>,
}

impl StoreSpec {
    /// The store a run's command line asks for: the S3 bucket when both endpoint and bucket are
    /// given (under `prefix`, by default one of the run's own), else a local directory in the
    /// run's scratch directory.
    pub fn from_args(s3: &S3Args, work: &WorkDir) -> StoreSpec {
        match (&s3.s3_endpoint, &s3.s3_bucket) {
            (Some(endpoint), Some(bucket)) => StoreSpec::S3 {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                region: s3.s3_region.clone(),
                prefix: s3.s3_prefix.clone().unwrap_or_else(|| {
                    format!(
                        "folio-bench/{}-{}/",
                        work.started_unix_s,
                        std::process::id()
                    )
                }),
            },
            _ => StoreSpec::Local {
                root: work.path.join("objects"),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StoreSpec::Local { root } => format!("local directory under {}", root.display()),
            StoreSpec::S3 {
                endpoint, bucket, ..
            } => format!("S3 bucket {bucket} at {endpoint}"),
        }
    }

    /// The directory group `group` flushes to, for a local-directory store.
    pub fn local_dir(&self, group: &str) -> Option<PathBuf> {
        match self {
            StoreSpec::Local { root } => Some(root.join(group)),
            StoreSpec::S3 { .. } => None,
        }
    }

    fn toml(&self, group: &str) -> String {
        match self {
            StoreSpec::Local { root } => format!(
                "kind = \"local\"\npath = {}\n",
                quote(&root.join(group).to_string_lossy())
            ),
            StoreSpec::S3 {
                endpoint,
                bucket,
                region,
                prefix,
            } => format!(
                "kind = \"s3\"\nbucket = {}\nprefix = {}\nregion = {}\nendpoint = {}\n\
                 path_style = true\n",
                quote(bucket),
                quote(&format!("{prefix}{group}/")),
                quote(region),
                quote(endpoint)
            ),
        }
    }
}

/// The `folio` binary the suite starts its groups from: `given` (`--folio-bin`), else the `folio`
/// next to this executable (cargo builds both into the same target directory), else the first
/// `folio` on PATH.
pub fn find_folio_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        anyhow::ensure!(
            is_executable(p),
            "--folio-bin {}: not an executable file",
            p.display()
        );
        return Ok(p.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("folio")));
    if let Some(p) = beside.iter().find(|p| is_executable(p)) {
        return Ok(p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = std::env::split_paths(&path)
        .map(|dir| dir.join("folio"))
        .find(|p| is_executable(p))
    {
        return Ok(p);
    }
    let beside = beside
        .map(|p| format!(" (looked for {})", p.display()))
        .unwrap_or_default();
    anyhow::bail!(
        "no folio binary next to folio-bench{beside} or on PATH: build it \
         (cargo build --workspace --bins) or pass --folio-bin PATH"
    )
}

/// A regular file someone may execute (the exec itself reports anything finer).
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A TOML basic string. JSON's string escapes are a subset of TOML's.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// `n` distinct free ports on 127.0.0.1 (held together while chosen, so none repeats).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("pick free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Child processes that are killed when this is dropped, and also when the suite itself dies
/// (they get SIGKILL when their parent exits), so a benchmark never leaves servers behind.
#[derive(Default)]
pub struct Children {
    procs: Vec<(String, Child, PathBuf)>,
}

impl Children {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        self.procs
            .push((name.to_string(), child, log.to_path_buf()));
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|(_, c, _)| c.id()).collect()
    }

    /// The process id of the child started as `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, c, _)| c.id())
    }

    /// Kills the child started as `name`, waits for it, and forgets it.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .position(|(n, _, _)| n == name)
            .with_context(|| format!("no child named {name}"))?;
        let (_, mut child, _) = self.procs.remove(i);
        // An error here means the child had already exited: it is gone either way.
        let _ = child.kill();
        child.wait().with_context(|| format!("wait for {name}"))?;
        Ok(())
    }

    /// Fails, with the end of its log, if any child has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child, log) in &mut self.procs {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
                anyhow::bail!(
                    "{name} exited ({status}); end of {}:\n{tail}",
                    log.display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A 3-node group of `folio server` processes this suite started.
pub struct LocalGroup {
    pub addrs: Vec<String>,
    pub metrics: Vec<String>,
    pub leader: String,
    children: Children,
    /// What a node is restarted with: the binary, the group's directory and name, and whether
    /// the nodes get test S3 credentials.
    exe: PathBuf,
    dir: PathBuf,
    name: String,
    s3: bool,
}

/// Settings of a started group's nodes beyond the store.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// The `[flush] early_seal` setting.
    pub early_seal: bool,
    /// TOML appended to every node's config, after its `[flush]` table: it starts with a table
    /// header (`[checkpoint]`, `[read]`, …) and names no table the config already has
    /// (`object_store`, `flush`).
    pub extra_toml: String,
}

impl LocalGroup {
    /// Starts the group `name` in `dir/name` from the `folio` binary `exe` and waits for a
    /// leader. `early_seal` is the `[flush] early_seal` setting; the flush interval is the
    /// default (1 s).
    pub async fn start(
        exe: &Path,
        dir: &Path,
        name: &str,
        store: &StoreSpec,
        early_seal: bool,
    ) -> anyhow::Result<LocalGroup> {
        let opts = NodeOptions {
            early_seal,
            extra_toml: String::new(),
        };
        LocalGroup::start_with(exe, dir, name, store, &opts).await
    }

    /// [`LocalGroup::start`] with every node setting of `opts`.
    pub async fn start_with(
        exe: &Path,
        dir: &Path,
        name: &str,
        store: &StoreSpec,
        opts: &NodeOptions,
    ) -> anyhow::Result<LocalGroup> {
        let early_seal = opts.early_seal;
        let s3 = matches!(store, StoreSpec::S3 { .. });
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let ports = free_ports(6)?;
        let addrs: Vec<String> = ports[..3]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let metrics: Vec<String> = ports[3..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut members = String::new();
        for (i, a) in addrs.iter().enumerate() {
            members += &format!("[[initial_members]]\nid = {}\naddr = {}\n", i + 1, quote(a));
        }
        let mut children = Children::default();
        for i in 0..3 {
            let data = dir.join(format!("node-{}", i + 1));
            let cfg = format!(
                "node_id = {}\nlisten_addr = {}\ndata_dir = {}\nmetrics_addr = {}\n{members}\
                 [object_store]\n{}[flush]\nearly_seal = {early_seal}\n{}",
                i + 1,
                quote(&addrs[i]),
                quote(&data.to_string_lossy()),
                quote(&metrics[i]),
                store.toml(name),
                opts.extra_toml,
            );
            let path = dir.join(format!("node-{}.toml", i + 1));
            std::fs::write(&path, cfg).with_context(|| format!("write {}", path.display()))?;
            children.spawn(
                &node_name(name, i + 1),
                server_command(exe, &path, s3),
                &dir.join(format!("node-{}.log", i + 1)),
            )?;
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let leader = loop {
            children.check_alive()?;
            let mut found = None;
            for a in &addrs {
                if let Ok(s) = Client::node_status(a, Duration::from_secs(1)).await {
                    if s.leader_id != 0 && !s.leader_addr.is_empty() {
                        found = Some(s.leader_addr);
                        break;
                    }
                }
            }
            if let Some(l) = found {
                break l;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "group {name} elected no leader within {STARTUP_TIMEOUT:?} (logs in {})",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(LocalGroup {
            addrs,
            metrics,
            leader,
            children,
            exe: exe.to_path_buf(),
            dir,
            name: name.to_string(),
            s3,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.pids()
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.children.check_alive()
    }

    /// The node ids of the group's members, in the order of `addrs` and `metrics`.
    pub fn node_ids(&self) -> impl Iterator<Item = usize> {
        1..=self.addrs.len()
    }

    /// The data directory of node `id` (1, 2 or 3).
    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    /// The process id of node `id`'s server.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.children.pid(&node_name(&self.name, id))
    }

    /// Kills node `id` and starts it again with the same config and data directory, so its
    /// in-memory caches start empty, then waits until it answers and knows a leader. Its output
    /// goes to `node-{id}.restarted.log`. Catching up on the log is the caller's to wait for.
    pub async fn restart(&mut self, id: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=self.addrs.len()).contains(&id),
            "no node {id} in group {}",
            self.name
        );
        let name = node_name(&self.name, id);
        self.children.kill(&name)?;
        let config = self.dir.join(format!("node-{id}.toml"));
        self.children.spawn(
            &name,
            server_command(&self.exe, &config, self.s3),
            &self.dir.join(format!("node-{id}.restarted.log")),
        )?;
        let addr = &self.addrs[id - 1];
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.children.check_alive()?;
            if let Ok(s) = Client::node_status(addr, Duration::from_secs(1)).await {
                if s.leader_id != 0 {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} did not rejoin within {STARTUP_TIMEOUT:?} (logs in {})",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The child-process name of node `id` of group `group`.
fn node_name(group: &str, id: usize) -> String {
    format!("{group} node {id}")
}

/// `folio server --config config`, quiet, with test S3 credentials when `s3` and none are set.
fn server_command(exe: &Path, config: &Path, s3: bool) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("server").arg("--config").arg(config);
    cmd.env("FOLIO_LOG", "warn");
    if s3 {
        // An S3-compatible test server takes any credentials; real ones come from the
        // environment as usual.
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ] {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    }
    cmd
}

/// A run's scratch directory, removed on drop unless kept.
pub(crate) struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
    /// When the run started (Unix seconds), part of its names.
    pub started_unix_s: u64,
}

impl WorkDir {
    /// A directory of its own, `{name}-{pid}-{start}` under `under` (default: the system temp
    /// directory), so removing it removes only what this run created.
    pub fn create(under: Option<&Path>, name: &str, keep: bool) -> anyhow::Result<WorkDir> {
        let started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = under
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("{name}-{}-{started_unix_s}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(WorkDir {
            path,
            keep,
            started_unix_s,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("bench: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
