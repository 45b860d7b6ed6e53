//! Go's `path` and (on Linux) `path/filepath`: lexical path handling (`Clean`, `Base`,
//! `Dir`, `Ext`, `Join`, `Rel`, `IsLocal`), shell patterns (`Match`) and `EvalSymlinks`.

use super::golang::go_err;

/// Go's `path.Clean`: the shortest equivalent path by lexical processing.
pub(super) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let p = path.as_bytes();
    let rooted = p[0] == b'/';
    let n = p.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if p[r] == b'/' || (p[r] == b'.' && (r + 1 == n || p[r + 1] == b'/')) {
            r += 1;
        } else if p[r] == b'.' && p[r + 1] == b'.' && (r + 2 == n || p[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && p[r] != b'/' {
                out.push(p[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return ".".into();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Go's `path.Base`: the last element; `.` for an empty path, `/` for only slashes.
pub(super) fn base(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        return "/".into();
    }
    match p.rfind('/') {
        Some(i) => p[i + 1..].to_string(),
        None => p.to_string(),
    }
}

/// Go's `path.Dir`: everything but the last element, cleaned.
pub(super) fn dir(path: &str) -> String {
    let d = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    };
    clean(d)
}

/// Go's `path.Ext`: from the last `.` of the last element, or empty.
pub(super) fn ext(path: &str) -> &str {
    for (i, c) in path.bytes().enumerate().rev() {
        match c {
            b'/' => break,
            b'.' => return &path[i..],
            _ => {}
        }
    }
    ""
}

/// Go's `path.Join`: the non-empty elements joined by `/`, cleaned; empty if all are empty.
pub(super) fn join(elems: &[&str]) -> String {
    let parts: Vec<&str> = elems.iter().copied().filter(|e| !e.is_empty()).collect();
    if parts.is_empty() {
        return String::new();
    }
    clean(&parts.join("/"))
}

/// Go's `filepath.IsLocal` on Unix.
pub(super) fn is_local(path: &str) -> bool {
    if path.starts_with('/') || path.is_empty() {
        return false;
    }
    let p = if path.split('/').any(|e| e == "." || e == "..") {
        clean(path)
    } else {
        path.to_string()
    };
    !(p == ".." || p.starts_with("../"))
}

/// Go's `io/fs.ValidPath`: unrooted, slash-separated, no empty, `.` or `..` element (`.`
/// alone is the root).
pub(super) fn valid_fs_path(path: &str) -> bool {
    if path == "." {
        return true;
    }
    path.split('/')
        .all(|e| !e.is_empty() && e != "." && e != "..")
}

/// Go's `filepath.Rel` on Unix.
pub(super) fn rel(basepath: &str, targpath: &str) -> Result<String, String> {
    let cant = || format!("Rel: can't make {targpath} relative to {basepath}");
    let base = clean(basepath);
    let targ = clean(targpath);
    if targ == base {
        return Ok(".".into());
    }
    let base = if base == "." { String::new() } else { base };
    if base.starts_with('/') != targ.starts_with('/') {
        return Err(cant());
    }
    let (b, t) = (base.as_bytes(), targ.as_bytes());
    let (bl, tl) = (b.len(), t.len());
    let (mut b0, mut bi, mut t0, mut ti) = (0, 0, 0, 0);
    loop {
        while bi < bl && b[bi] != b'/' {
            bi += 1;
        }
        while ti < tl && t[ti] != b'/' {
            ti += 1;
        }
        if t[t0..ti] != b[b0..bi] {
            break;
        }
        if bi < bl {
            bi += 1;
        }
        if ti < tl {
            ti += 1;
        }
        b0 = bi;
        t0 = ti;
        if b0 >= bl && t0 >= tl {
            break;
        }
    }
    if &base[b0..bi] == ".." {
        return Err(cant());
    }
    if b0 != bl {
        let seps = base[b0..bl].matches('/').count();
        let mut out = String::from("..");
        for _ in 0..seps {
            out.push_str("/..");
        }
        if t0 != tl {
            out.push('/');
            out.push_str(&targ[t0..]);
        }
        return Ok(out);
    }
    Ok(targ[t0..].to_string())
}

const BAD_PATTERN: &str = "syntax error in pattern";

/// Go's `path.Match` (and `filepath.Match` on Unix): shell patterns `*`, `?`, `[...]`, `\`;
/// a malformed pattern is an error even when the name does not match.
pub(super) fn matches(pattern: &str, name: &str) -> Result<bool, String> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'pat: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pat;
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut inrange = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => inrange = true,
            b']' => inrange = false,
            b'*' if !inrange => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// The first character of `s` (a code point, or one byte of a broken sequence) and its width.
fn decode(s: &[u8]) -> (u32, usize) {
    let n = match s.first() {
        None => return (0xFFFD, 0),
        Some(c) if *c < 0x80 => 1,
        Some(c) if *c >= 0xF0 => 4,
        Some(c) if *c >= 0xE0 => 3,
        Some(_) => 2,
    };
    match s.get(..n).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(t) => (t.chars().next().map_or(0xFFFD, |c| c as u32), n),
        None => (0xFFFD, 1),
    }
}

fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<(&'a [u8], bool), String> {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = 0;
                if !failed {
                    let (c, n) = decode(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == b'\\' {
                    chunk = &chunk[1..];
                    match chunk.first() {
                        Some(c) => *c,
                        None => return Err(BAD_PATTERN.into()),
                    }
                } else {
                    c
                };
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        return Ok((b"", false));
    }
    Ok((s, true))
}

fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), String> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return Err(BAD_PATTERN.into());
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(BAD_PATTERN.into());
        }
    }
    let (r, n) = decode(chunk);
    if r == 0xFFFD && n == 1 {
        return Err(BAD_PATTERN.into());
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BAD_PATTERN.into());
    }
    Ok((r, rest))
}

/// Go's `filepath.EvalSymlinks` on Unix: the path with every symbolic link resolved, walked
/// element by element (a relative path stays relative unless a link is absolute).
pub(super) fn eval_symlinks(path: &str) -> Result<String, String> {
    let mut path = path.to_string();
    let mut vol_len = usize::from(path.starts_with('/'));
    let mut dest = path[..vol_len].to_string();
    let mut links = 0;
    let (mut start, mut end) = (vol_len, vol_len);
    while start < path.len() {
        let b = path.as_bytes();
        while start < b.len() && b[start] == b'/' {
            start += 1;
        }
        end = start;
        while end < b.len() && b[end] != b'/' {
            end += 1;
        }
        let elem = &path[start..end];
        if elem.is_empty() {
            break;
        } else if elem == "." {
            start = end;
            continue;
        } else if elem == ".." {
            let r = dest.rfind('/').filter(|r| *r >= vol_len);
            match r {
                Some(r) if &dest[r + 1..] != ".." => dest.truncate(r),
                _ => {
                    if dest.len() > vol_len {
                        dest.push('/');
                    }
                    dest.push_str("..");
                }
            }
            start = end;
            continue;
        }
        if !dest.is_empty() && !dest.ends_with('/') {
            dest.push('/');
        }
        dest.push_str(elem);
        let md = std::fs::symlink_metadata(&dest)
            .map_err(|e| format!("lstat {dest}: {}", go_err(&e)))?;
        if !md.file_type().is_symlink() {
            if !md.is_dir() && end < path.len() {
                return Err("not a directory".into());
            }
            start = end;
            continue;
        }
        links += 1;
        if links > 255 {
            return Err("EvalSymlinks: too many links".into());
        }
        let link = std::fs::read_link(&dest)
            .map_err(|e| format!("readlink {dest}: {}", go_err(&e)))?
            .to_string_lossy()
            .into_owned();
        path = format!("{link}{}", &path[end..]);
        if link.starts_with('/') {
            dest = "/".into();
            end = 1;
            vol_len = 1;
        } else {
            match dest.rfind('/').filter(|r| *r >= vol_len) {
                Some(r) => dest.truncate(r),
                None => dest.truncate(vol_len),
            }
            end = 0;
        }
        start = end;
    }
    let _ = end;
    Ok(clean(&dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_follows_go() {
        for (i, o) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/..", "a/b"),
            ("a/../..", ".."),
            ("../../abc", "../../abc"),
            ("/../abc", "/abc"),
            ("/..", "/"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("abc/./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("a/b/../../c", "c"),
            ("/abc/def/../..", "/"),
            ("//", "/"),
            ("./", "."),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base("///"), "/");
        assert_eq!(dir("/a/b/c"), "/a/b");
        assert_eq!(dir("abc"), ".");
        assert_eq!(ext("a/b.tar.gz"), ".gz");
        assert_eq!(ext("a.b/c"), "");
        assert_eq!(join(&["a", "", "b/../c"]), "a/c");
        assert_eq!(join(&["", ""]), "");
    }

    #[test]
    fn rel_and_local_follow_go() {
        for (b, t, o) in [
            ("/a/b", "/a/b/c/d", "c/d"),
            ("/a/b/c", "/a/x", "../../x"),
            ("a/b", "a/b", "."),
            (".", "a/b", "a/b"),
            ("a", "b", "../b"),
            ("/", "/a", "a"),
            ("../a", "../b", "../b"),
        ] {
            assert_eq!(rel(b, t).as_deref(), Ok(o), "{b} {t}");
        }
        assert!(rel("/a", "b").is_err());
        assert!(rel("..", "a").is_err());
        assert!(is_local("a/b"));
        assert!(!is_local("a/../../b"));
        assert!(!is_local("/a"));
        assert!(valid_fs_path("a/b"));
        assert!(!valid_fs_path("a//b"));
    }

    #[test]
    fn match_follows_go() {
        for (p, n, o) in [
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[^c]", "abc", Ok(false)),
            ("a\\*b", "a*b", Ok(true)),
            ("a?b", "a☺b", Ok(true)),
            ("[", "a", Err(BAD_PATTERN.to_string())),
            ("[x-]", "x", Err(BAD_PATTERN.to_string())),
            ("a[", "x", Err(BAD_PATTERN.to_string())),
            ("*x", "xxx", Ok(true)),
        ] {
            assert_eq!(matches(p, n), o, "{p} {n}");
        }
    }

    #[test]
    fn eval_symlinks_resolves_links() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap().to_string();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        assert_eq!(
            eval_symlinks(&format!("{root}/link/../link/")),
            Ok(format!("{root}/real"))
        );
        assert!(eval_symlinks(&format!("{root}/missing"))
            .unwrap_err()
            .starts_with("lstat"));
    }
}
