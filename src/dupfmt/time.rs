//! Times as duplicity writes and reads them (FORMAT-duplicity.md §1.2 and
//! duplicity(1) "TIME FORMATS").
//!
//! * File names carry UTC `YYYYMMDDTHHMMSSZ` ([`to_compact`], [`parse_compact`]).
//! * Legacy names and `--time` accept W3C datetimes ([`parse_w3c`]).
//! * `--time` also accepts `now`, Unix seconds, intervals (`3D`, `1h30m`) and
//!   dates (`YYYY/MM/DD`, `YYYY-MM-DD`, `MM/DD/YYYY`) ([`parse_time`]).
//!
//! Local time: like duplicity, a datetime or date without a zone is read in
//! the local zone's *standard* time (duplicity appends the non-DST offset);
//! we get the same by calling `mktime` with `tm_isdst = 0`.

use crate::error::{Error, Result};

/// Days since 1970-01-01 of a proleptic Gregorian date. Days past the end of
/// the month roll over (`(2024, 2, 31)` is 2024-03-02), like `timegm`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let m = i64::from(month);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds of a UTC civil time (fields may overflow, as with `timegm`).
pub fn utc_to_unix(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> i64 {
    days_from_civil(year, month, day) * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec)
}

/// `YYYYMMDDTHHMMSSZ` (UTC), the time format of file names.
pub fn to_compact(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!("{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| acc.checked_mul(10)?.checked_add(u32::from(b - b'0')))
}

/// duplicity's field ranges for datetimes (year strictly between 1900 and 2100).
fn check_ranges(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> bool {
    1900 < y && y < 2100 && (1..=12).contains(&mo) && (1..=31).contains(&d) && h <= 23 && mi <= 59 && s <= 61
}

/// Parses the compact UTC form `YYYYMMDDTHHMMSSZ`.
pub fn parse_compact(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[4..6])?, digits(&b[6..8])?);
    let (h, mi, sec) = (digits(&b[9..11])?, digits(&b[11..13])?, digits(&b[13..15])?);
    check_ranges(y, mo, d, h, mi, sec).then(|| utc_to_unix(i64::from(y), mo, d, h, mi, sec))
}

/// Parses a W3C datetime `YYYY-MM-DDTHH:MM:SS` followed by `Z`, `+HH:MM`,
/// `-HH:MM` or nothing (local standard time, see the module docs).
pub fn parse_w3c(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, sec) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !check_ranges(y, mo, d, h, mi, sec) {
        return None;
    }
    let utc = utc_to_unix(i64::from(y), mo, d, h, mi, sec);
    match &b[19..] {
        b"" => local_to_unix(i64::from(y), mo, d, h, mi, sec),
        b"Z" => Some(utc),
        [sign @ (b'+' | b'-'), hh @ ..] if hh.len() == 5 && hh[2] == b':' => {
            let off = i64::from(digits(&hh[0..2])?) * 3600 + i64::from(digits(&hh[3..5])?) * 60;
            Some(if *sign == b'+' { utc - off } else { utc + off })
        }
        _ => None,
    }
}

/// Unix seconds of a local civil time read as standard time (`tm_isdst = 0`).
pub fn local_to_unix(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    // SAFETY: an all-zero `tm` is a valid value; mktime only reads and
    // normalises the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = i32::try_from(year - 1900).ok()?;
    tm.tm_mon = i32::try_from(month).ok()? - 1;
    tm.tm_mday = i32::try_from(day).ok()?;
    tm.tm_hour = i32::try_from(hour).ok()?;
    tm.tm_min = i32::try_from(min).ok()?;
    tm.tm_sec = i32::try_from(sec).ok()?;
    tm.tm_isdst = 0;
    // SAFETY: `tm` is a valid, exclusively borrowed struct.
    let t = unsafe { libc::mktime(&mut tm) };
    // mktime returns -1 on error, which is also a valid time (1969-12-31T23:59:59Z).
    if t == -1 && (tm.tm_year, tm.tm_mon, tm.tm_mday) != (69, 11, 31) {
        return None;
    }
    Some(t)
}

/// The current time, whole seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The time for a new set extending a chain that ends at `after` (None: a
/// full backup): now, once the clock has passed `after`. Set times are
/// whole seconds and must increase, so a backup right after another waits
/// for the next second; at most 5 s: a clock further behind is for the
/// caller to refuse (the time is then not after `after`), not to wait out.
pub fn now_after(after: Option<i64>) -> i64 {
    let mut t = now();
    while let Some(t1) = after
        && t <= t1
        && t1 - t < 5
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        t = now();
    }
    t
}

/// Local time in `asctime` form (`Tue Jan  2 03:04:05 2024`), as duplicity
/// prints times in listings.
pub fn pretty(t: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // SAFETY: an all-zero `tm` is valid; localtime_r fills the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt: libc::time_t = t;
    // SAFETY: both pointers are valid for the duration of the call.
    let ok = !unsafe { libc::localtime_r(&tt, &mut tm) }.is_null();
    if !ok {
        return to_compact(t);
    }
    let wd = DAYS.get(tm.tm_wday as usize).copied().unwrap_or("???");
    let mo = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("???");
    format!(
        "{wd} {mo} {:2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    )
}

/// Seconds of an interval like `3D`, `2W5D`, `1h30m` (units `s m h D W M Y`;
/// a month is 30 days, a year 365 days). `None` when not an interval.
pub fn parse_interval(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 2 {
        return None;
    }
    let (mut total, mut i) = (0i64, 0usize);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i == b.len() {
            return None;
        }
        let n: i64 = s[start..i].parse().ok()?;
        let unit: i64 = match b[i] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'D' => 86_400,
            b'W' => 7 * 86_400,
            b'M' => 30 * 86_400,
            b'Y' => 365 * 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        i += 1;
    }
    Some(total)
}

/// Midnight (local standard time) of `YYYY/MM/DD`, `YYYY-MM-DD`,
/// `MM/DD/YYYY`, `MM-DD-YYYY` (one- or two-digit month and day) or `YYYYMMDDZ`.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (y, mo, d) = if b.len() == 9 && b[8] == b'Z' {
        (digits(&b[0..4])?, digits(&b[4..6])?, digits(&b[6..8])?)
    } else {
        let parts: Vec<&str> = s.split(['-', '/']).collect();
        let [a, m, c] = parts[..] else { return None };
        let short = |p: &str| (1..=2).contains(&p.len()).then(|| digits(p.as_bytes())).flatten();
        if a.len() == 4 {
            (digits(a.as_bytes())?, short(m)?, short(c)?)
        } else if c.len() == 4 {
            (digits(c.as_bytes())?, short(a)?, short(m)?)
        } else {
            return None;
        }
    };
    if !check_ranges(y, mo, d, 0, 0, 0) {
        return None;
    }
    local_to_unix(i64::from(y), mo, d, 0, 0, 0)
}

/// The time a file name's time field stands for (after duplicity upper-cases
/// it): compact UTC, W3C, Unix seconds, or a date. `None` if unparsable or 0
/// (duplicity ignores such files). Intervals, which would depend on the
/// current time, are not accepted here.
pub fn parse_name_time(field: &str) -> Option<i64> {
    let s = field.to_ascii_uppercase();
    let t = if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        s.parse().ok()?
    } else {
        parse_compact(&s).or_else(|| parse_w3c(&s)).or_else(|| parse_date(&s))?
    };
    (t != 0).then_some(t)
}

/// Parses a user time (`--time`, `remove-older-than`) as duplicity does, in
/// this order: `now`; Unix seconds; compact or W3C datetime; an interval
/// meaning `now` minus that; a date (midnight, local standard time).
pub fn parse_time(s: &str, now: i64) -> Result<i64> {
    if s == "now" {
        return Ok(now);
    }
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse().map_err(|_| bad_time(s));
    }
    if let Some(t) = parse_compact(s).or_else(|| parse_w3c(s)) {
        return Ok(t);
    }
    if let Some(secs) = parse_interval(s) {
        return Ok(now - secs);
    }
    parse_date(s).ok_or_else(|| bad_time(s))
}

fn bad_time(s: &str) -> Error {
    Error::usage(format!("bad time string {s:?}")).hint(
        "use now, seconds since the epoch, 2002-04-26T04:22:01[-07:00], an interval like 3D or 1h30m \
         (units s m h D W M Y), or a date like 2002/4/26, 2002-04-26, 4/26/2002",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2024, 2, 31), days_from_civil(2024, 3, 2));
    }

    #[test]
    fn compact() {
        assert_eq!(parse_compact("20261126T035930Z"), Some(1_795_665_570));
        assert_eq!(to_compact(1_795_665_570), "20261126T035930Z");
        assert_eq!(to_compact(1_795_665_687), "20261126T040127Z");
        assert_eq!(to_compact(0), "19700101T000000Z");
        assert_eq!(to_compact(951_782_400), "20000229T000000Z");
        for t in [1_000_000_000i64, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_compact(&to_compact(t)), Some(t));
        }
        for bad in ["20261126T035930", "20261126X035930Z", "2026112xT035930Z", "18991126T035930Z", "20261326T035930Z"] {
            assert_eq!(parse_compact(bad), None, "{bad}");
        }
    }

    #[test]
    fn w3c() {
        assert_eq!(parse_w3c("2026-11-26T03:59:30Z"), Some(1_795_665_570));
        assert_eq!(parse_w3c("2002-04-26T04:22:01-07:00"), Some(1_019_820_121));
        assert_eq!(parse_w3c("2002-04-26T13:22:01+02:00"), Some(1_019_820_121));
        assert_eq!(parse_w3c("2002-04-26T04:22:01-07"), None);
        assert_eq!(parse_w3c("2002-04-26 04:22:01Z"), None);
    }

    /// The local reading agrees with localtime_r whenever that says "no DST".
    #[test]
    fn local_standard_time() {
        let t = parse_w3c("2024-01-02T03:04:05").unwrap();
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let tt: libc::time_t = t;
        assert!(!unsafe { libc::localtime_r(&tt, &mut tm) }.is_null());
        if tm.tm_isdst == 0 {
            assert_eq!((tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec), (124, 0, 2, 3, 4, 5));
        }
        let utc = parse_w3c("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(t - utc, -i64::from(tm.tm_gmtoff as i32) + if tm.tm_isdst > 0 { 3600 } else { 0 });
        assert_eq!(parse_time("2024-01-02", 0).unwrap(), parse_w3c("2024-01-02T00:00:00").unwrap());
        assert!(pretty(t).contains(" 2024"));
    }

    #[test]
    fn user_times() {
        let now = 1_700_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("123456890", now).unwrap(), 123_456_890);
        assert_eq!(parse_time("2002-01-25T07:00:00+02:00", now).unwrap(), 1_011_934_800);
        assert_eq!(parse_time("20261126T035930Z", now).unwrap(), 1_795_665_570);
        assert_eq!(parse_time("3D", now).unwrap(), now - 3 * 86_400);
        assert_eq!(parse_time("2W5D", now).unwrap(), now - 19 * 86_400);
        assert_eq!(parse_time("1h30m", now).unwrap(), now - 5400);
        assert_eq!(parse_time("1h78m", now).unwrap(), now - 3600 - 78 * 60);
        assert_eq!(parse_time("2M1Y10s", now).unwrap(), now - 60 * 86_400 - 365 * 86_400 - 10);
        let d = parse_time("2002-03-05", now).unwrap();
        for same in ["2002/3/5", "03-05-2002", "2002-3-05", "3/5/2002", "20020305Z"] {
            assert_eq!(parse_time(same, now).unwrap(), d, "{same}");
        }
        let err = parse_time("yesterday", now).unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Usage);
        for bad in ["", "3d", "D", "3D4", "2002-13-05", "2002-3-5-1", "1/2/3", "99999999999999999999999"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(parse_interval("3D"), Some(259_200));
        assert_eq!(parse_interval("3"), None);
    }

    #[test]
    fn name_times() {
        assert_eq!(parse_name_time("20261126t035930z"), Some(1_795_665_570));
        assert_eq!(parse_name_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_name_time("2002-04-26T04:22:01-07:00"), Some(1_019_820_121));
        assert_eq!(parse_name_time("0"), None);
        assert_eq!(parse_name_time(""), None);
        assert_eq!(parse_name_time("3D"), None);
        assert_eq!(parse_name_time("now"), None);
    }
}
