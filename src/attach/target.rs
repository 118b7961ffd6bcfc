//! What `agentenv attach TARGET` means: a PID (`1234`, `pid:1234`), or a running container by
//! full id, name, or unique prefix of either. Resolves it to a live process, or says why not
//! (unknown, ambiguous, exited) with the running containers to choose from. Reads only.

use anyhow::Result;

use super::cgroup_tree;
use super::runtimes::{self, Container};
use crate::diag::Diagnostic;

/// A running process to attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: i32,
    /// Its start time (clock ticks after boot), to notice a PID reused by another process.
    pub start_time: u64,
    /// A short name for the prompt: the container's name or short id, or `pid-N`.
    pub name: String,
    /// How messages name it: `web (3f2a9c12d5f1, podman)` or `process 1234`.
    pub label: String,
}

impl Target {
    /// The process `pid`, if it runs.
    pub fn of_pid(pid: i32) -> Result<Self> {
        match process_state(pid) {
            Some((_, 'Z')) => Err(Diagnostic::new(format!("process {pid} has exited"))
                .detail("it is a zombie, waiting for its parent to collect its exit status")
                .hint("attach to a running process or container; `ps` lists them")
                .into()),
            Some((start_time, _)) => Ok(Self {
                pid,
                start_time,
                name: format!("pid-{pid}"),
                label: format!("process {pid}"),
            }),
            None => Err(Diagnostic::new(format!("no process {pid} is running"))
                .hint("`ps` lists processes; a container's main PID is `podman inspect -f '{{.State.Pid}}' NAME`")
                .into()),
        }
    }

    fn of_container(c: &Container, pid: i32) -> Result<Self> {
        let mut t = Self::of_pid(pid).map_err(|_| {
            Diagnostic::new(format!(
                "container {} is not running any more",
                c.describe()
            ))
            .hint("start it again, or pick another one: `podman ps`, `docker ps`")
        })?;
        t.name = c
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| c.short_id().into());
        t.label = c.describe();
        Ok(t)
    }

    /// Whether the same process (not a reuse of its PID) still runs.
    pub fn still_running(&self) -> bool {
        is_live(self.pid, self.start_time)
    }

    /// Says so when a session that ended with `code` was ended by the target's own end: a
    /// target that ends takes the processes of its PID namespace with it, the session too.
    pub fn say_if_it_ended(&self, code: i32) {
        if code == 128 + 9 && self.ends_soon() {
            eprintln!("agentenv: {} exited; the session ended with it", self.label);
        }
    }

    /// True if the target is gone or goes within half a second: a dying PID 1 of a namespace
    /// waits for every process in it to be reaped (the session included) before it exits.
    fn ends_soon(&self) -> bool {
        // PF_EXITING in /proc/PID/stat's flags: the target has begun to exit. Only then wait.
        const PF_EXITING: u64 = 0x4;
        let flags = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().nth(6)?.parse::<u64>().ok()
            });
        if flags.is_some_and(|f| f & PF_EXITING == 0) {
            return !self.still_running();
        }
        for _ in 0..50 {
            if !self.still_running() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }
}

/// True if process `pid` runs and is the one that started at `start` (0: any); a zombie or a
/// reused PID is not. State files outlive their containers, and PIDs are reused.
pub fn is_live(pid: i32, start: u64) -> bool {
    process_state(pid).is_some_and(|(s, st)| st != 'Z' && (start == 0 || s == start))
}

/// The start time and state letter of process `pid`, from `/proc/PID/stat`.
pub fn process_state(pid: i32) -> Option<(u64, char)> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// What the user typed, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `pid:N`: only a process.
    Pid(i32),
    /// Digits: a process if one has that PID, else a container id (ids can be all digits).
    Digits(i32),
    /// A container id, name, or prefix of either.
    Container(String),
}

pub fn parse_query(arg: &str) -> Result<Query> {
    if let Some(n) = arg.strip_prefix("pid:") {
        return match n.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(Query::Pid(pid)),
            _ => Err(Diagnostic::new(format!("'{arg}' is not a process id"))
                .hint("write a PID after `pid:`, e.g. `agentenv attach pid:1234`")
                .into()),
        };
    }
    if arg.is_empty() {
        return Err(Diagnostic::new("no target given")
            .hint("name a container (id, name, or prefix) or a process: `agentenv attach web`, `agentenv attach pid:1234`")
            .into());
    }
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(pid) = arg.parse::<i32>() {
            return Ok(Query::Digits(pid));
        }
    }
    Ok(Query::Container(arg.to_string()))
}

/// The containers `query` selects: one with that exact id or name, else every container whose
/// id or a name starts with it.
pub fn match_containers<'a>(query: &str, list: &'a [Container]) -> Vec<&'a Container> {
    let exact: Vec<_> = list
        .iter()
        .filter(|c| c.id == query || c.names.iter().any(|n| n == query))
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    list.iter()
        .filter(|c| c.id.starts_with(query) || c.names.iter().any(|n| n.starts_with(query)))
        .collect()
}

/// A query long enough to be a short id (12 hex digits, as `ps` prints them) that selects one
/// container from the state files alone is taken without asking the engines.
fn is_long_hex(query: &str) -> bool {
    query.len() >= 12 && query.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves the user's TARGET to a running process.
pub fn resolve_target(arg: &str) -> Result<Target> {
    let query = match parse_query(arg)? {
        Query::Pid(pid) => return Target::of_pid(pid),
        Query::Digits(pid) if process_state(pid).is_some() => return Target::of_pid(pid),
        Query::Digits(_) => arg.to_string(),
        Query::Container(q) => q,
    };
    let mut list = runtimes::from_state_files();
    let quick = match_containers(&query, &list);
    let settled = quick.len() == 1
        && (quick[0].id == query
            || quick[0].names.iter().any(|n| n == &query)
            || is_long_hex(&query));
    if !settled {
        runtimes::merge(&mut list, runtimes::from_clis());
    }
    if match_containers(&query, &list).is_empty() {
        runtimes::merge(&mut list, cgroup_tree::from_cgroups());
    }
    let found = match_containers(&query, &list);
    match found.as_slice() {
        [one] => {
            let pid = one
                .pid
                .or_else(|| runtimes::pid_from_cli(one))
                .ok_or_else(|| {
                    Diagnostic::new(format!("cannot find the main process of {}", one.describe()))
                        .hint(format!("attach to its PID instead: `agentenv attach pid:$({} inspect -f '{{{{.State.Pid}}}}' {})`", one.engine, one.short_id()))
                })?;
            Target::of_container(one, pid)
        }
        [] => Err(match stopped_container(&query) {
            Some(d) => d,
            None => unknown_target(arg, &list),
        }
        .into()),
        many => Err(ambiguous_target(arg, many).into()),
    }
}

/// Whether `query` names one container that exists but does not run, as the CLIs see it.
fn stopped_container(query: &str) -> Option<Diagnostic> {
    let all = runtimes::all_from_clis();
    let containers: Vec<Container> = all.iter().map(|(c, _)| c.clone()).collect();
    let [one] = match_containers(query, &containers)[..] else {
        return None;
    };
    let (_, status) = all.iter().find(|(c, _)| c.id == one.id)?;
    Some(not_running(one, status))
}

fn not_running(c: &Container, status: &str) -> Diagnostic {
    let name = c.names.first().map_or(c.short_id(), String::as_str);
    Diagnostic::new(format!(
        "container {} exists but is not running ({status})",
        c.describe()
    ))
    .hint(format!(
        "start it: `{} start {name}`, then attach again",
        c.engine
    ))
}

fn unknown_target(arg: &str, running: &[Container]) -> Diagnostic {
    let what = if arg.bytes().all(|b| b.is_ascii_digit()) {
        format!("no process or running container matches '{arg}'")
    } else {
        format!("no running container matches '{arg}'")
    };
    let mut d = Diagnostic::new(what);
    d = if running.is_empty() {
        d.detail(
            "no containers are running (asked: runc and crun state files, podman, docker, the cgroup tree)",
        )
    } else {
        d.detail(format!("running containers: {}", describe_list(running)))
    };
    d.hint("use a name or id from `podman ps` or `docker ps`, or a process: `agentenv attach pid:1234`")
        .hint("a rootless container of another user is attached by its PID: `agentenv attach pid:$(podman inspect -f '{{.State.Pid}}' NAME)`, with podman run as that user")
}

fn ambiguous_target(arg: &str, many: &[&Container]) -> Diagnostic {
    let owned: Vec<Container> = many.iter().map(|c| (*c).clone()).collect();
    Diagnostic::new(format!(
        "cannot attach to '{arg}': {} running containers match",
        many.len()
    ))
    .detail(format!("candidates: {}", describe_list(&owned)))
    .hint("use a longer id or the full name")
}

fn describe_list(list: &[Container]) -> String {
    const SHOWN: usize = 10;
    let mut sorted: Vec<&Container> = list.iter().collect();
    sorted.sort_by(|a, b| a.names.first().cmp(&b.names.first()).then(a.id.cmp(&b.id)));
    let mut text: Vec<String> = sorted.iter().take(SHOWN).map(|c| c.describe()).collect();
    if list.len() > SHOWN {
        text.push(format!("and {} more", list.len() - SHOWN));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::runtimes::Engine;

    fn c(id: &str, name: &str, engine: Engine) -> Container {
        Container {
            id: id.into(),
            names: vec![name.into()],
            engine,
            pid: Some(1),
        }
    }

    #[test]
    fn queries_are_pids_digits_or_containers() {
        assert_eq!(parse_query("pid:42").unwrap(), Query::Pid(42));
        assert_eq!(parse_query("42").unwrap(), Query::Digits(42));
        assert_eq!(
            parse_query("3f2a").unwrap(),
            Query::Container("3f2a".into())
        );
        assert!(parse_query("pid:x").is_err());
        assert!(parse_query("pid:-1").is_err());
        assert!(parse_query("").is_err());
    }

    #[test]
    fn exact_name_wins_over_prefixes() {
        let list = vec![
            c("3f2a9c", "web", Engine::Docker),
            c("b81e07", "web-2", Engine::Podman),
        ];
        let m = match_containers("web", &list);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, "3f2a9c");
        assert_eq!(match_containers("b8", &list)[0].names, vec!["web-2"]);
        assert!(match_containers("zz", &list).is_empty());
    }

    #[test]
    fn ambiguous_prefix_lists_the_candidates() {
        let list = vec![
            c("3f2a9c", "web-1", Engine::Docker),
            c("b81e07", "web-2", Engine::Podman),
        ];
        let m = match_containers("web", &list);
        let d = ambiguous_target("web", &m);
        assert_eq!(
            d.message,
            "cannot attach to 'web': 2 running containers match"
        );
        assert_eq!(
            d.details,
            vec!["candidates: web-1 (3f2a9c, docker), web-2 (b81e07, podman)"]
        );
        assert_eq!(d.hints, vec!["use a longer id or the full name"]);
    }

    #[test]
    fn unknown_target_lists_running_containers() {
        let d = unknown_target("nope", &[c("3f2a9c", "web-1", Engine::Docker)]);
        assert_eq!(d.message, "no running container matches 'nope'");
        assert_eq!(
            d.details,
            vec!["running containers: web-1 (3f2a9c, docker)"]
        );
        let d = unknown_target("nope", &[]);
        assert!(d.details[0].starts_with("no containers are running"));
        assert!(d.hints[1].contains("rootless container of another user"));
        assert!(d.hints[1].contains("podman inspect -f '{{.State.Pid}}' NAME"));
    }

    #[test]
    fn a_stopped_container_is_named_with_its_status() {
        let mut web = c("3f2a9c12d5f1aa", "web", Engine::Docker);
        web.pid = None;
        let d = not_running(&web, "Exited (137) 2 seconds ago");
        assert_eq!(
            d.message,
            "container web (3f2a9c12d5f1, docker) exists but is not running (Exited (137) 2 seconds ago)"
        );
        assert_eq!(
            d.hints,
            vec!["start it: `docker start web`, then attach again"]
        );
    }

    #[test]
    fn this_process_is_a_target_and_a_dead_pid_is_not() {
        let me = Target::of_pid(std::process::id() as i32).unwrap();
        assert!(me.still_running());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let err = Target::of_pid(pid).unwrap_err();
        assert_eq!(err.to_string(), format!("no process {pid} is running"));
    }
}
