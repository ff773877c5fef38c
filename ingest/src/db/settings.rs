//! CampsHub360's `attendance_configuration`: values an administrator sets in Django, which win
//! over the file's defaults. One place reads them, for the writer and every job.
//!
//! Django's `get_setting` reads only active rows and `get_typed_value` converts by the row's
//! `data_type`; in practice rows are written by hand with whatever type, so here the value is
//! read by what the caller needs: a flag is `true`, `1` or `yes` (any case), as Django's boolean
//! conversion; a number is any decimal (`"5"`, `"7.5"`) within the setting's bounds. A value
//! that does not read as that is logged and the default used, so a typo in the admin does not
//! stop attendance.

use super::DbError;
use tokio_postgres::GenericClient;

/// The settings Rollcall reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Minutes after a session's start until a punch is `late` (CampsHub360 default 5).
    GracePeriodMinutes,
    /// Attendance percentage for exam eligibility (default 75).
    ThresholdPercent,
    /// Years attendance data is kept (default 7).
    DataRetentionYears,
    /// Whether the open/close job opens due sessions.
    AutoOpenSessions,
    /// Whether the open/close job closes ended sessions.
    AutoCloseSessions,
    /// Whether closing a session marks absent every ENROLLED student without a record.
    AutoMarkAbsent,
}

impl Setting {
    /// The `attendance_configuration.key`.
    pub fn key(self) -> &'static str {
        match self {
            Setting::GracePeriodMinutes => "GRACE_PERIOD_MINUTES",
            Setting::ThresholdPercent => "THRESHOLD_PERCENT",
            Setting::DataRetentionYears => "DATA_RETENTION_YEARS",
            Setting::AutoOpenSessions => "AUTO_OPEN_SESSIONS",
            Setting::AutoCloseSessions => "AUTO_CLOSE_SESSIONS",
            Setting::AutoMarkAbsent => "AUTO_MARK_ABSENT",
        }
    }

    /// The values that make sense, for numbers: anything else (a typo of `5000000` grace
    /// minutes) would push instants past what a date can hold.
    fn bounds(self) -> Option<(f64, f64)> {
        match self {
            Setting::GracePeriodMinutes => Some((0.0, 1440.0)),
            Setting::ThresholdPercent => Some((0.0, 100.0)),
            Setting::DataRetentionYears => Some((1.0, 100.0)),
            _ => None,
        }
    }
}

/// A type a setting can be read as.
pub trait SettingValue: Sized + Copy + std::fmt::Debug {
    /// The stored text as this type, or `None` when it does not read as one.
    fn parse(text: &str) -> Option<Self>;
    /// The value as a number, to check a setting's bounds.
    fn number(self) -> Option<f64> {
        None
    }
}

impl SettingValue for bool {
    fn parse(text: &str) -> Option<bool> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }
}

impl SettingValue for f64 {
    fn parse(text: &str) -> Option<f64> {
        text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
    }
    fn number(self) -> Option<f64> {
        Some(self)
    }
}

impl SettingValue for i64 {
    /// Decimals are cut to whole numbers (`"7.5"` minutes is 7), as the writer always read them.
    fn parse(text: &str) -> Option<i64> {
        f64::parse(text)
            .filter(|v| v.abs() < 1e15)
            .map(|v| v.trunc() as i64)
    }
    fn number(self) -> Option<f64> {
        Some(self as f64)
    }
}

/// Reads `text` as `setting`: `None` when it is not a `T` or out of the setting's bounds.
pub fn read<T: SettingValue>(setting: Setting, text: &str) -> Option<T> {
    let v = T::parse(text)?;
    match (setting.bounds(), v.number()) {
        (Some((lo, hi)), Some(n)) if !(lo..=hi).contains(&n) => None,
        _ => Some(v),
    }
}

/// The active value of `setting`, read as `T`, or `default` when it is absent or unreadable.
pub async fn get<T: SettingValue>(
    c: &impl GenericClient,
    setting: Setting,
    default: T,
) -> Result<T, DbError> {
    let row = c
        .query_opt(
            "SELECT value FROM attendance_configuration WHERE key = $1 AND is_active",
            &[&setting.key()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(default);
    };
    let text: String = row.get(0);
    Ok(match read(setting, &text) {
        Some(v) => v,
        None => {
            tracing::warn!(
                key = setting.key(),
                value = %text,
                default = ?default,
                "attendance_configuration value is not a {} in range; using the default: fix it in the admin",
                std::any::type_name::<T>()
            );
            default
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_django_reads_them() {
        for t in ["true", "True", " 1 ", "YES"] {
            assert_eq!(bool::parse(t), Some(true), "{t}");
        }
        for f in ["false", "0", "No"] {
            assert_eq!(bool::parse(f), Some(false), "{f}");
        }
        assert_eq!(bool::parse("maybe"), None);
    }

    #[test]
    fn numbers_read_whole_or_decimal() {
        assert_eq!(i64::parse("5"), Some(5));
        assert_eq!(i64::parse(" 7.9 "), Some(7));
        assert_eq!(f64::parse("62.5"), Some(62.5));
        assert_eq!(f64::parse("NaN"), None);
        assert_eq!(i64::parse("1e300"), None);
        assert_eq!(i64::parse("five"), None);
    }

    #[test]
    fn numbers_out_of_a_settings_bounds_are_not_used() {
        assert_eq!(read::<i64>(Setting::GracePeriodMinutes, "10"), Some(10));
        assert_eq!(read::<i64>(Setting::GracePeriodMinutes, "5000000"), None);
        assert_eq!(read::<i64>(Setting::GracePeriodMinutes, "-1"), None);
        assert_eq!(read::<f64>(Setting::ThresholdPercent, "100"), Some(100.0));
        assert_eq!(read::<f64>(Setting::ThresholdPercent, "101"), None);
        assert_eq!(read::<f64>(Setting::DataRetentionYears, "0"), None);
        assert_eq!(read::<bool>(Setting::AutoMarkAbsent, "no"), Some(false));
    }
}
