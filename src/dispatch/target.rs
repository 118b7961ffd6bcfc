//! What `agentenv dispatch TARGET` names: `[user@]host[:port]`, `ssh://[user@]host[:port]`, or a
//! Host alias of `~/.ssh/config`. Parsing only; connecting is `ssh.rs`'s job, through the
//! user's own OpenSSH, which resolves aliases, keys and proxies itself.

use std::fmt;

/// A remote host as ssh is to be asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: Option<String>,
    /// A host name, address or `~/.ssh/config` alias, passed to ssh as is.
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the target is empty")]
    Empty,
    #[error("'{0}' is not a valid port")]
    BadPort(String),
    #[error("'{0}' has no host name")]
    NoHost(String),
    #[error("'{0}' cannot be a host name (it would be read as an ssh option)")]
    LooksLikeOption(String),
    #[error("'{0}' has a path; dispatch takes a host, not a URL to a file")]
    HasPath(String),
}

impl Target {
    pub fn parse(arg: &str) -> Result<Self, TargetError> {
        if arg.is_empty() {
            return Err(TargetError::Empty);
        }
        let rest = match arg.strip_prefix("ssh://") {
            Some(r) => {
                let r = r.strip_suffix('/').unwrap_or(r);
                if r.contains('/') {
                    return Err(TargetError::HasPath(arg.to_string()));
                }
                r
            }
            None => arg,
        };
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some((_, h)) => (None, h),
            None => (None, rest),
        };
        let (host, port) = split_port(hostport, arg)?;
        if host.is_empty() {
            return Err(TargetError::NoHost(arg.to_string()));
        }
        if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err(TargetError::LooksLikeOption(arg.to_string()));
        }
        Ok(Target {
            user,
            host: host.to_string(),
            port,
        })
    }

    /// The arguments that make ssh reach this target: `-p PORT`, `-l USER`, then the host
    /// (which `parse` has checked cannot be read as an option).
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(port) = self.port {
            args.push("-p".to_string());
            args.push(port.to_string());
        }
        if let Some(user) = &self.user {
            args.push("-l".to_string());
            args.push(user.clone());
        }
        args.push(self.host.clone());
        args
    }
}

/// `host:port`, `[v6]:port`, `[v6]`, or a bare host (an IPv6 address without brackets keeps its
/// colons).
fn split_port<'a>(s: &'a str, whole: &str) -> Result<(&'a str, Option<u16>), TargetError> {
    if let Some(inner) = s.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return Err(TargetError::NoHost(whole.to_string()));
        };
        return match after {
            "" => Ok((addr, None)),
            p => match p.strip_prefix(':') {
                Some(p) => Ok((addr, Some(parse_port(p)?))),
                None => Err(TargetError::BadPort(p.to_string())),
            },
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, Some(parse_port(p)?))),
        _ => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, TargetError> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(TargetError::BadPort(p.to_string())),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: Option<u16>) -> Target {
        Target {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn plain_forms_parse() {
        assert_eq!(Target::parse("box").unwrap(), t(None, "box", None));
        assert_eq!(
            Target::parse("ana@box").unwrap(),
            t(Some("ana"), "box", None)
        );
        assert_eq!(
            Target::parse("ana@box:2222").unwrap(),
            t(Some("ana"), "box", Some(2222))
        );
        assert_eq!(
            Target::parse("ssh://ana@10.0.0.2:22/").unwrap(),
            t(Some("ana"), "10.0.0.2", Some(22))
        );
    }

    #[test]
    fn ipv6_forms_parse() {
        assert_eq!(Target::parse("::1").unwrap(), t(None, "::1", None));
        assert_eq!(Target::parse("[::1]:22").unwrap(), t(None, "::1", Some(22)));
        assert_eq!(
            Target::parse("u@[fe80::1]").unwrap(),
            t(Some("u"), "fe80::1", None)
        );
    }

    #[test]
    fn bad_targets_are_refused() {
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse("box:0"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            Target::parse("box:x"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(Target::parse("ana@"), Err(TargetError::NoHost(_))));
        assert!(matches!(
            Target::parse("-oProxyCommand=x"),
            Err(TargetError::LooksLikeOption(_))
        ));
        assert!(matches!(
            Target::parse("ssh://box/path"),
            Err(TargetError::HasPath(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["box", "ana@box:2222", "[::1]:22"] {
            assert_eq!(Target::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn ssh_args_put_the_host_last() {
        assert_eq!(
            Target::parse("ana@box:2222").unwrap().ssh_args(),
            ["-p", "2222", "-l", "ana", "box"]
        );
    }
}
