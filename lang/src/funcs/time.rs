//! Local-time helpers for the `datetime` module: broken-down local time (through the C
//! library, so the host's time zone rules apply) and Go reference-time layouts.

/// A Unix time broken down in the local time zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// Full year.
    pub year: i64,
    /// Month 1-12.
    pub month: u32,
    /// Day of month 1-31.
    pub day: u32,
    /// Hour 0-23.
    pub hour: u32,
    /// Minute 0-59.
    pub minute: u32,
    /// Second 0-60.
    pub second: u32,
    /// Day of week, 0 = Sunday.
    pub weekday: u32,
    /// Offset east of UTC in seconds.
    pub offset: i64,
    /// Zone abbreviation (`UTC`, `CET`).
    pub zone: String,
}

const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Breaks `t` down in the local time zone; negative times are refused.
pub fn local(t: i64) -> Result<LocalTime, String> {
    if t < 0 {
        return Err(format!("negative unix time {t}"));
    }
    let tt: libc::time_t = t as libc::time_t;
    // SAFETY: `tm` is plain data; localtime_r fills it and returns null on failure.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    if r.is_null() {
        return Err(format!("unix time {t} cannot be represented"));
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points at a NUL-terminated static string when non-null.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(LocalTime {
        year: tm.tm_year as i64 + 1900,
        month: tm.tm_mon as u32 + 1,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        weekday: tm.tm_wday as u32,
        offset: tm.tm_gmtoff as i64,
        zone,
    })
}

/// Lower-case English day name.
pub fn weekday_name(t: &LocalTime) -> &'static str {
    DAYS[t.weekday as usize % 7]
}

fn offset_text(off: i64) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.abs();
    format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
}

/// `YYYY-MM-DD hh:mm:ss ±hhmm ZONE`.
pub fn print(t: &LocalTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {} {}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        offset_text(t.offset),
        t.zone
    )
}

/// Formats with a Go reference-time layout (`2006-01-02 15:04:05`).
pub fn format(t: &LocalTime, layout: &str) -> String {
    let h12 = if t.hour.is_multiple_of(12) {
        12
    } else {
        t.hour % 12
    };
    let month = MONTHS[(t.month as usize + 11) % 12];
    let day = DAYS[t.weekday as usize % 7];
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    // Longest tokens first, so `January` wins over `Jan` and `2006` over `2`.
    let tokens: [(&str, String); 17] = [
        ("January", month.to_string()),
        ("Monday", cap(day)),
        ("-0700", offset_text(t.offset)),
        ("2006", format!("{:04}", t.year)),
        ("Jan", month[..3].to_string()),
        ("Mon", cap(&day[..3])),
        ("MST", t.zone.clone()),
        ("01", format!("{:02}", t.month)),
        ("02", format!("{:02}", t.day)),
        ("15", format!("{:02}", t.hour)),
        ("03", format!("{h12:02}")),
        ("04", format!("{:02}", t.minute)),
        ("05", format!("{:02}", t.second)),
        ("PM", if t.hour < 12 { "AM" } else { "PM" }.into()),
        ("1", t.month.to_string()),
        ("2", t.day.to_string()),
        ("3", h12.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_render_every_token() {
        let t = LocalTime {
            year: 2024,
            month: 3,
            day: 5,
            hour: 14,
            minute: 7,
            second: 9,
            weekday: 2,
            offset: 3600,
            zone: "CET".into(),
        };
        assert_eq!(format(&t, "2006-01-02 15:04:05"), "2024-03-05 14:07:09");
        assert_eq!(
            format(&t, "Jan 2, 3PM Mon MST -0700"),
            "Mar 5, 2PM Tue CET +0100"
        );
        assert_eq!(format(&t, "January Monday"), "March Tuesday");
        assert_eq!(print(&t), "2024-03-05 14:07:09 +0100 CET");
        assert_eq!(weekday_name(&t), "tuesday");
        assert!(local(-1).is_err());
        assert!(local(0).unwrap().year >= 1969);
    }
}
