//! The local account files, parsed: `/etc/passwd` (`name:x:uid:gid:gecos:home:shell`) and
//! `/etc/group` (`name:x:gid:member,member`). Lines that do not parse (comments, NIS `+`
//! entries) are skipped, as the shadow tools skip them.

use std::path::PathBuf;

use tend_engine::ResError;

/// One line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Where the account files are (`/etc`, or a test's directory).
#[derive(Clone, Debug)]
pub(crate) struct Files {
    dir: PathBuf,
}

/// Both files, read at one check.
#[derive(Clone, Debug, Default)]
pub(crate) struct Db {
    pub users: Vec<Passwd>,
    pub groups: Vec<GroupEntry>,
}

impl Files {
    /// The system's: `/etc`.
    pub(crate) fn system() -> Files {
        Files::new("/etc")
    }

    pub(crate) fn new(dir: impl Into<PathBuf>) -> Files {
        Files { dir: dir.into() }
    }

    /// The files the watch follows: the ones checks read and their shadows.
    pub(crate) fn watched(&self) -> Vec<String> {
        ["passwd", "group", "shadow", "gshadow"]
            .iter()
            .map(|f| self.dir.join(f).to_string_lossy().into_owned())
            .collect()
    }

    /// Reads both files (a missing file reads as empty).
    pub(crate) fn read(&self) -> Result<Db, ResError> {
        let read = |name: &str| -> Result<String, ResError> {
            let p = self.dir.join(name);
            match std::fs::read(&p) {
                Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(ResError::io("reading", &p, e)),
            }
        };
        Ok(Db {
            users: read("passwd")?.lines().filter_map(parse_passwd).collect(),
            groups: read("group")?.lines().filter_map(parse_group).collect(),
        })
    }

    #[cfg(test)]
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

fn parse_passwd(line: &str) -> Option<Passwd> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 7 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
        return None;
    }
    Some(Passwd {
        name: f[0].into(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].into(),
        shell: f[6].into(),
    })
}

fn parse_group(line: &str) -> Option<GroupEntry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 4 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
        return None;
    }
    Some(GroupEntry {
        name: f[0].into(),
        gid: f[2].parse().ok()?,
        members: f[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

impl Db {
    pub(crate) fn user(&self, name: &str) -> Option<&Passwd> {
        self.users.iter().find(|u| u.name == name)
    }

    pub(crate) fn user_by_uid(&self, uid: u32) -> Option<&Passwd> {
        self.users.iter().find(|u| u.uid == uid)
    }

    pub(crate) fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub(crate) fn group_by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// The supplementary groups `user` is a member of, sorted.
    pub(crate) fn member_of(&self, user: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_account_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\n+nis\nbroken:x:zz:0::/:/bin/sh\n\
             alice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("group"),
            "root:x:0:\nsudo:x:27:alice,bob\nusers:x:100:bob\nalice:x:1000:\n",
        )
        .unwrap();
        let f = Files::new(t.path());
        assert_eq!(f.dir(), t.path());
        let db = f.read().unwrap();
        assert_eq!(db.users.len(), 2);
        let a = db.user("alice").unwrap();
        assert_eq!(
            (a.uid, a.gid, a.home.as_str(), a.shell.as_str()),
            (1000, 1000, "/home/alice", "/bin/zsh")
        );
        assert_eq!(db.user_by_uid(0).unwrap().name, "root");
        assert_eq!(db.member_of("alice"), ["sudo"]);
        assert_eq!(db.member_of("bob"), ["sudo", "users"]);
        assert_eq!(db.group_by_gid(27).unwrap().name, "sudo");
        assert!(db.group("nope").is_none());
        // Missing files read as empty.
        let empty = Files::new(t.path().join("none")).read().unwrap();
        assert!(empty.users.is_empty() && empty.groups.is_empty());
    }
}
