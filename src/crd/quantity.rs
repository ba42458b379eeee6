//! Kubernetes quantities (`"100"`, `"1.5k"`, `"250m"`, `"2Mi"`) as milli-units, the unit the
//! engine and the HPA compute in (`Quantity::MilliValue()`).

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The target has no quantity for its type.
    #[error("the target has no quantity for its type")]
    Missing,
    /// The text is not a quantity.
    #[error("{0:?} is not a Kubernetes quantity (e.g. 100, 1.5k, 250m, 2Mi)")]
    Invalid(String),
    /// The value does not fit in milli-units.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// A quantity in milli-units, rounded up as upstream's `MilliValue()` does.
pub fn milli_value(text: &str) -> Result<i64, QuantityError> {
    let invalid = || QuantityError::Invalid(text.to_string());
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let scale: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        // Exa, not an exponent: the API server's grammar (and its isQuantity()) says so.
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().map_err(|_| invalid())?),
        _ => return Err(invalid()),
    };
    let n: f64 = number.parse().map_err(|_| invalid())?;
    let milli = (n * scale * 1000.0 - 1e-9).ceil();
    if !milli.is_finite() || milli.abs() >= i64::MAX as f64 {
        return Err(QuantityError::TooLarge(text.to_string()));
    }
    Ok(milli as i64)
}

/// Milli-units back to a quantity string (`1500` -> `"1500m"`, `2000` -> `"2"`).
pub fn from_milli(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_forms() {
        assert_eq!(milli_value("100"), Ok(100_000));
        assert_eq!(milli_value("1.5k"), Ok(1_500_000));
        assert_eq!(milli_value("250m"), Ok(250));
        assert_eq!(milli_value("2Ki"), Ok(2_048_000));
        assert_eq!(milli_value("1e3"), Ok(1_000_000));
        assert_eq!(milli_value("0.0001"), Ok(1)); // rounded up, as MilliValue()
        // Every suffix the API server accepts: E is exa; values beyond milli-units are too large.
        assert_eq!(milli_value("1E3"), Ok(1_000_000));
        assert_eq!(milli_value("1Pi"), Ok(1_125_899_906_842_624_000));
        assert!(matches!(milli_value("1E"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(
            milli_value("1Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(milli_value("ten"), Err(QuantityError::Invalid(_))));
        assert!(matches!(milli_value("5x"), Err(QuantityError::Invalid(_))));
        assert_eq!(from_milli(1500), "1500m");
        assert_eq!(from_milli(2000), "2");
    }
}
