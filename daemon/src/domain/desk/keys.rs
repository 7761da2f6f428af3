//! Normalised contact keys for duplicate detection: the same person
//! imported twice under two ids shares an email (whatever its case and
//! spaces) or a phone number (whatever its format, in E.164).

/// Countries whose national numbers relance turns into E.164: ISO code,
/// calling code.
pub const COUNTRIES: &[(&str, &str)] = &[
    ("BE", "32"),
    ("CA", "1"),
    ("CH", "41"),
    ("DE", "49"),
    ("ES", "34"),
    ("FR", "33"),
    ("GB", "44"),
    ("IT", "39"),
    ("LU", "352"),
    ("MA", "212"),
    ("NL", "31"),
    ("PT", "351"),
    ("US", "1"),
];

/// The calling code of a country (`FR` → `33`).
pub fn calling_code(country: &str) -> Option<&'static str> {
    let country = country.trim().to_ascii_uppercase();
    COUNTRIES
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, code)| *code)
}

/// The email without spaces, lower-cased; `None` when it has no `@`.
pub fn email_key(email: &str) -> Option<String> {
    let key: String = email
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    (key.contains('@') && key.len() > 2).then_some(key)
}

/// The number in E.164 (`+33612345678`): `+` or `00` starts an
/// international number; otherwise a leading trunk `0` is dropped and the
/// calling code of `country` put before. Separators (spaces, dots, dashes,
/// parentheses, `(0)`) are ignored. `None` when it is no phone number.
pub fn phone_key(phone: &str, country: &str) -> Option<String> {
    let phone = phone.trim().replace("(0)", "");
    let international = phone.starts_with('+');
    let mut digits = String::with_capacity(16);
    for c in phone.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' | ' ' | '.' | '-' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return None,
        }
    }
    let e164 = if international {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else {
        let code = calling_code(country)?;
        let national = if code == "1" {
            digits.strip_prefix('1').unwrap_or(&digits)
        } else {
            digits.strip_prefix('0').unwrap_or(&digits)
        };
        format!("{code}{national}")
    };
    (8..=15).contains(&e164.len()).then(|| format!("+{e164}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_ignore_case_and_spaces() {
        assert_eq!(
            email_key(" Anne.Martin@Example.COM ").as_deref(),
            Some("anne.martin@example.com")
        );
        assert_eq!(email_key("no-at-sign"), None);
    }

    #[test]
    fn phones_become_e164() {
        for p in [
            "06 12 34 56 78",
            "06.12.34.56.78",
            "+33 6 12 34 56 78",
            "+33 (0)6 12 34 56 78",
            "0033612345678",
        ] {
            assert_eq!(phone_key(p, "FR").as_deref(), Some("+33612345678"), "{p}");
        }
        assert_eq!(
            phone_key("(415) 555-0100", "US").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(phone_key("06 12", "FR"), None);
        assert_eq!(phone_key("call me", "FR"), None);
    }
}
