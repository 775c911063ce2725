//! Exact parsing and formatting of Kubernetes resource quantities.
//!
//! The grammar is the API server's (`k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>
//! ```
//!
//! A parsed [`Quantity`] is exact: `digits x 10^exp10 x 2^exp2`, with no floating point.
//! Converting to millicores or bytes rounds up, as the API server's `MilliValue()` and
//! `Value()` do (`0.1m` is `1m`). Formatting picks the shortest exact form, so
//! `parse(format(x)) == x` for every value.

use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

/// The significant digits a quantity may carry (what fits a `u128` exactly).
const MAX_DIGITS: usize = 38;

/// A malformed or unrepresentable quantity. Every variant names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text is not in quantity syntax.
    #[error("invalid quantity {value:?}: {reason}")]
    Syntax {
        /// The text as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value does not fit the unit it was converted to (a signed 64-bit integer).
    #[error("quantity {value:?} is out of range for {unit}")]
    OutOfRange {
        /// The text as given.
        value: String,
        /// The unit of the failed conversion (`millicores`, `bytes`).
        unit: &'static str,
    },
    /// A resource amount below zero.
    #[error("quantity {value:?} is negative; {resource} must be >= 0")]
    Negative {
        /// The text as given.
        value: String,
        /// `cpu` or `memory`.
        resource: &'static str,
    },
}

/// An exact quantity: `(-1)^negative x digits x 10^exp10 x 2^exp2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    negative: bool,
    digits: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses `text` in the API server's quantity syntax.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError::Syntax {
            value: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(err("empty"));
        }
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };

        // The number: integer digits, optional '.', fraction digits.
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_part = &text[int_start..pos];
        let mut frac_part = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_part = &text[frac_start..pos];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("no digits"));
        }

        let (digits, mut exp10) = significant(int_part, frac_part)
            .ok_or_else(|| err("more than 38 significant digits"))?;

        let mut exp2 = 0u32;
        let suffix = &text[pos..];
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            _ if suffix.starts_with(['e', 'E']) => {
                let exp = parse_exponent(&suffix[1..])
                    .ok_or_else(|| err("exponent must be an integer such as e3 or E-2"))?;
                exp10 = exp10
                    .checked_add(exp)
                    .ok_or_else(|| err("exponent out of range"))?;
            }
            _ => {
                return Err(err(
                    "unknown suffix (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent)",
                ));
            }
        }

        Ok(Self {
            text: text.to_owned(),
            negative: negative && digits != 0,
            digits,
            exp10,
            exp2,
        })
    }

    /// The text this quantity was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The value in thousandths, rounded up (the API server's `MilliValue()`).
    pub fn to_milli(&self) -> Result<i64, QuantityError> {
        self.scaled(3, "millicores")
    }

    /// The value in units, rounded up (the API server's `Value()`).
    pub fn to_units(&self) -> Result<i64, QuantityError> {
        self.scaled(0, "bytes")
    }

    /// The value x 10^scale, rounded toward positive infinity.
    fn scaled(&self, scale: i32, unit: &'static str) -> Result<i64, QuantityError> {
        let range = || QuantityError::OutOfRange {
            value: self.text.clone(),
            unit,
        };
        let mut magnitude = self.digits;
        for _ in 0..self.exp2 {
            magnitude = magnitude.checked_mul(2).ok_or_else(range)?;
        }
        let exp = self.exp10.checked_add(scale).ok_or_else(range)?;
        let (quotient, inexact) = if exp >= 0 {
            let factor = pow10(exp).ok_or_else(range)?;
            (magnitude.checked_mul(factor).ok_or_else(range)?, false)
        } else {
            match pow10(-exp) {
                Some(divisor) => (magnitude / divisor, !magnitude.is_multiple_of(divisor)),
                // 10^-exp exceeds any u128: the magnitude is below one unit.
                None => (0, magnitude != 0),
            }
        };
        let value = i64::try_from(quotient).map_err(|_| range())?;
        Ok(match (self.negative, inexact) {
            (false, false) => value,
            (false, true) => value.checked_add(1).ok_or_else(range)?,
            // Rounding toward positive infinity truncates a negative value.
            (true, _) => -value,
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Strips insignificant zeros: returns the digits as an integer and the power of ten to apply.
fn significant(int_part: &str, frac_part: &str) -> Option<(u128, i32)> {
    let all = format!("{int_part}{frac_part}");
    let trimmed_start = all.trim_start_matches('0');
    let trimmed = trimmed_start.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some((0, 0));
    }
    let trailing_zeros = trimmed_start.len() - trimmed.len();
    if trimmed.len() > MAX_DIGITS {
        return None;
    }
    let digits: u128 = trimmed.parse().ok()?;
    let frac_len = i32::try_from(frac_part.len()).ok()?;
    let zeros = i32::try_from(trailing_zeros).ok()?;
    Some((digits, zeros - frac_len))
}

fn parse_exponent(s: &str) -> Option<i32> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let exp: i32 = s.parse().ok()?;
    // Far beyond anything representable in i64 either way; keeps arithmetic overflow-free.
    (exp.abs() <= 10_000).then_some(exp)
}

fn pow10(exp: i32) -> Option<u128> {
    10u128.checked_pow(u32::try_from(exp).ok()?)
}

/// CPU of a Kubernetes quantity in millicores, rounded up. Negative values are an error.
pub fn cpu_millis(q: &K8sQuantity) -> Result<i64, QuantityError> {
    let parsed = Quantity::parse(&q.0)?;
    if parsed.is_negative() {
        return Err(QuantityError::Negative {
            value: q.0.clone(),
            resource: "cpu",
        });
    }
    parsed.to_milli()
}

/// Memory of a Kubernetes quantity in bytes, rounded up. Negative values are an error.
pub fn memory_bytes(q: &K8sQuantity) -> Result<i64, QuantityError> {
    let parsed = Quantity::parse(&q.0)?;
    if parsed.is_negative() {
        return Err(QuantityError::Negative {
            value: q.0.clone(),
            resource: "memory",
        });
    }
    parsed.to_units()
}

/// Formats millicores: whole cores without a suffix (`2`), otherwise millicores (`250m`).
pub fn format_cpu_millis(millis: i64) -> K8sQuantity {
    if millis % 1000 == 0 {
        K8sQuantity((millis / 1000).to_string())
    } else {
        K8sQuantity(format!("{millis}m"))
    }
}

/// Formats bytes exactly and briefly: the largest binary suffix that divides the value
/// (`512Mi`), else the largest decimal one (`1500k`), else plain bytes.
pub fn format_memory_bytes(bytes: i64) -> K8sQuantity {
    if bytes == 0 {
        return K8sQuantity("0".to_owned());
    }
    const BINARY: [(&str, i64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    const DECIMAL: [(&str, i64); 6] = [
        ("E", 1_000_000_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
    ];
    let binary = BINARY.iter().find(|(_, unit)| bytes % unit == 0);
    let decimal = DECIMAL.iter().find(|(_, unit)| bytes % unit == 0);
    let best = match (binary, decimal) {
        (Some(b), Some(d)) => Some(if d.1 > b.1 { d } else { b }),
        (b, d) => b.or(d),
    };
    match best {
        Some((suffix, unit)) => K8sQuantity(format!("{}{suffix}", bytes / unit)),
        None => K8sQuantity(bytes.to_string()),
    }
}
