//! What a target host is, learned by one POSIX `sh` script over ssh: its OS and architecture,
//! the user, and a directory agentenv may write and execute in (noexec `/tmp` and read-only
//! homes are common). Only the candidate directory is ever created, one level below a
//! directory that exists, and removed again when it does not serve. When agentenv's binary
//! for that architecture is there already (by content name), the same script ends by running
//! it for its own facts: a dispatch to a host it knows starts with one round trip.

use anyhow::Result;

use super::ssh::SshConnection;
use super::target::Target;
use crate::diag::Diagnostic;

/// The CPU architectures agentenv ships a binary for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn from_uname(m: &str) -> Option<Self> {
        match m {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture of this build of agentenv.
    pub fn current() -> Option<Self> {
        Self::from_uname(std::env::consts::ARCH)
    }
}

/// Facts about a host, as the probe found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub arch: Arch,
    /// The ssh user's id (not printed when the binary was found at once).
    pub uid: Option<u32>,
    pub home: String,
    /// Where agentenv keeps its files on the host (writable and executable).
    pub dir: String,
    /// What `__remote facts` printed (JSON), when the host had the binary already.
    pub agent_facts: Option<String>,
}

/// What the probe prints before agentenv's own facts, on the same line.
const FACTS_KEY: &str = "facts";

/// The probe: prints `key=value` lines, `facts=JSON` among them when agentenv's binary is there.
/// `REQUESTED` is a directory the user asked for (may be empty); `BIN_X86_64` and
/// `BIN_AARCH64` the content names of agentenv's binaries (empty for one this side lacks). A
/// candidate directory that holds the binary and runs it is taken as it is (that is the
/// check that it allows running programs); otherwise the first that passes the check.
const PROBE: &str = r#"
set -u
# A directory of user $2's, that nobody else may write: in a shared /tmp another user could
# have made it, and what it holds would run as us. A link to one counts only if it is theirs.
ours() {
  if [ -h "$1" ]; then
    [ -n "$(find "$1" -prune -user "$2" 2>/dev/null)" ] || return 1
  fi
  [ -n "$(find -H "$1" -prune -user "$2" ! -perm -020 ! -perm -002 2>/dev/null)" ]
}
# Runs agentenv's binary $2 in directory $1 if it is there and the directory is user $3's
# alone; prints the directory and the binary's facts.
facts_in() {
  [ -n "$1" ] && [ -n "$2" ] && [ -w "$1" ] && [ -x "$1/bin/$2" ] && ours "$1" "$3" &&
    facts=$("$1/bin/$2" __remote facts "$1" 2>/dev/null) &&
    printf 'dir=%s\nfacts=%s\n' "$1" "$facts"
}
# The common case first, starting as few programs as it can (each costs milliseconds): the
# binary in the requested directory, else in $XDG_RUNTIME_DIR or ~/.agentenv, checked as
# ours by the login name sshd set. A binary for another machine fails to run and the next
# is tried; if none runs, the full probe below decides.
me=${LOGNAME:-${USER:-}}
if [ -n "$REQUESTED" ]; then
  set -- "$REQUESTED"
else
  set -- "${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/agentenv}" "${HOME:+$HOME/.agentenv}"
fi
quick=
for d in "$@"; do
  [ -n "$me" ] || break
  for arch_name in "x86_64 $BIN_X86_64" "aarch64 $BIN_AARCH64"; do
    machine=${arch_name% *}
    if facts_in "$d" "${arch_name#* }" "$me"; then
      printf 'os=Linux\narch=%s\nhome=%s\n' "$machine" "${HOME:-}"
      quick=1
      break 2
    fi
  done
done
if [ -z "$quick" ]; then
set -- $(uname -sm)
os=${1:-} machine=${2:-}
echo "os=$os"
echo "arch=$machine"
uid=$(id -u)
echo "uid=$uid"
echo "home=${HOME:-}"
case "$machine" in
  x86_64|amd64) name=$BIN_X86_64 ;;
  aarch64|arm64) name=$BIN_AARCH64 ;;
  *) name= ;;
esac
if [ -n "$REQUESTED" ]; then
  set -- "$REQUESTED"
else
  set -- "${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/agentenv}" "${HOME:+$HOME/.agentenv}" "/var/tmp/agentenv-$uid" "/tmp/agentenv-$uid" "/dev/shm/agentenv-$uid"
fi
found=
if [ "$os" = Linux ] && [ -n "$name" ]; then
  for d in "$@"; do
    if facts_in "$d" "$name" "$uid"; then
      found=$d
      break
    fi
  done
fi
try_dir() {
  d=$1
  [ -n "$d" ] || return 1
  [ -d "$(dirname "$d")" ] || return 1
  made=
  if [ ! -d "$d" ] && [ ! -h "$d" ]; then
    mkdir "$d" 2>/dev/null || { echo "refused=$d"; return 1; }
    chmod 700 "$d"
    made=1
  fi
  ours "$d" "$uid" || { echo "foreign=$d"; return 1; }
  p="$d/.probe-$$"
  if printf '#!/bin/sh\necho ok\n' > "$p" 2>/dev/null && chmod 700 "$p" && [ "$("$p" 2>/dev/null)" = ok ]; then
    rm -f "$p"
    echo "dir=$d"
    return 0
  fi
  rm -f "$p"
  [ -z "$made" ] || rmdir "$d" 2>/dev/null
  echo "refused=$d"
  return 1
}
if [ -z "$found" ]; then
  for d in "$@"; do
    try_dir "$d" && break
  done
fi
fi
"#;

/// Connects to `target` and probes it in the connection's own first round trip;
/// `requested` is `--remote-dir`, `binaries` the content names of the agentenv binaries this
/// side could send (`bin/NAME` in agentenv's directory there).
pub fn connect_and_probe(
    target: &Target,
    requested: Option<&str>,
    binaries: &[(Arch, String)],
) -> Result<(SshConnection, HostFacts)> {
    let name = |arch: Arch| {
        binaries
            .iter()
            .find(|(a, _)| *a == arch)
            .map_or("", |(_, n)| n.as_str())
    };
    let script = format!(
        "REQUESTED={}\nBIN_X86_64={}\nBIN_AARCH64={}\n{PROBE}",
        shlex::try_quote(requested.unwrap_or(""))
            .map_err(|_| Diagnostic::new("--remote-dir cannot contain a NUL byte"))?,
        super::ssh::quote(name(Arch::X86_64))?,
        super::ssh::quote(name(Arch::Aarch64))?,
    );
    let (ssh, out) = SshConnection::open_running(target, &script)?;
    let facts = parse_probe(
        &String::from_utf8_lossy(&out),
        &target.to_string(),
        requested,
    )?;
    Ok((ssh, facts))
}

fn parse_probe(out: &str, host: &str, requested: Option<&str>) -> Result<HostFacts> {
    let mut os = None;
    let mut arch = None;
    let mut uid = None;
    let mut home = String::new();
    let mut dir = None;
    let mut refused = Vec::new();
    let mut foreign = Vec::new();
    let mut agent_facts = None;
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            FACTS_KEY => agent_facts = Some(v.to_string()),
            "os" => os = Some(v.to_string()),
            "arch" => arch = Some(v.to_string()),
            "uid" => uid = v.parse::<u32>().ok(),
            "home" => home = v.to_string(),
            "dir" => dir = Some(v.to_string()),
            "refused" => refused.push(v.to_string()),
            "foreign" => foreign.push(v.to_string()),
            _ => {}
        }
    }
    let os = os.unwrap_or_default();
    if os != "Linux" {
        return Err(Diagnostic::new(format!(
            "{host} runs {}, not Linux: agentenv dispatches only to Linux hosts",
            if os.is_empty() {
                "an unknown system"
            } else {
                &os
            }
        ))
        .into());
    }
    let machine = arch.unwrap_or_default();
    let arch = Arch::from_uname(&machine).ok_or_else(|| {
        Diagnostic::new(format!(
            "{host} is a {machine} machine; agentenv runs on x86_64 and aarch64 hosts"
        ))
    })?;
    let Some(dir) = dir else {
        let mut d = Diagnostic::new(format!(
            "found no directory on {host} that agentenv may write and run programs in"
        ));
        for r in &refused {
            d = d.detail(format!("tried {r}: not writable, or mounted noexec"));
        }
        for f in &foreign {
            d = d.detail(format!(
                "passed over {f}: it is not yours alone (another user could put programs there)"
            ));
        }
        let hint = match requested {
            Some(_) => {
                "pass another --remote-dir: a directory you can write that is not mounted noexec"
                    .to_string()
            }
            None => "pass --remote-dir DIR: a directory you can write that is not mounted noexec"
                .to_string(),
        };
        return Err(d.hint(hint).into());
    };
    Ok(HostFacts {
        arch,
        uid,
        home,
        dir,
        agent_facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_parses() {
        let f = parse_probe(
            "os=Linux\narch=aarch64\nuid=1000\nhome=/home/dev\nrefused=/tmp/agentenv-1000\ndir=/dev/shm/agentenv-1000\n",
            "h",
            None,
        )
        .unwrap();
        assert_eq!(f.arch, Arch::Aarch64);
        assert_eq!(f.uid, Some(1000));
        assert_eq!(f.dir, "/dev/shm/agentenv-1000");
        assert_eq!(f.agent_facts, None);
        let f = parse_probe(
            "os=Linux\narch=x86_64\nuid=1\nhome=/h\ndir=/h/.agentenv\nfacts={\"home\":\"/h\"}\n",
            "h",
            None,
        )
        .unwrap();
        assert_eq!(f.agent_facts.as_deref(), Some("{\"home\":\"/h\"}"));
        // The binary found at once: no uid line.
        let f = parse_probe(
            "os=Linux\narch=x86_64\nhome=/h\ndir=/h/.agentenv\nfacts={}\n",
            "h",
            None,
        )
        .unwrap();
        assert_eq!((f.uid, f.dir.as_str()), (None, "/h/.agentenv"));
    }

    #[test]
    fn no_usable_directory_names_what_was_tried() {
        let e = parse_probe(
            "os=Linux\narch=x86_64\nuid=1\nhome=/\nrefused=/tmp/agentenv-1\n",
            "h",
            None,
        )
        .unwrap_err();
        let text = crate::diag::render(&e);
        assert!(text.contains("tried /tmp/agentenv-1"), "{text}");
        assert!(text.contains("--remote-dir"), "{text}");
    }

    #[test]
    fn other_systems_are_refused() {
        let e = parse_probe("os=Darwin\narch=arm64\nuid=1\n", "h", None).unwrap_err();
        assert!(e.to_string().contains("not Linux"));
        let e = parse_probe("os=Linux\narch=riscv64\nuid=1\ndir=/x\n", "h", None).unwrap_err();
        assert!(e.to_string().contains("riscv64"));
    }
}
