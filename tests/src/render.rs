//! Renders `${VAR}` templates exactly as `envsubst` does, but refuses a variable that has no
//! value (envsubst would silently put an empty string there) and any other use of `$`.

use crate::Error;
use std::collections::{BTreeMap, BTreeSet};

/// One piece of a parsed template.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, Error> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        pieces.push(Piece::Text(&rest[..at]));
        let after = &rest[at + 1..];
        let line = template[..template.len() - rest.len() + at]
            .matches('\n')
            .count()
            + 1;
        let Some(body) = after.strip_prefix('{') else {
            return Err(Error::Config(format!(
                "template line {line}: `$` outside `${{VAR}}` (envsubst would expand it)"
            )));
        };
        let Some(end) = body.find('}') else {
            return Err(Error::Config(format!(
                "template line {line}: unclosed `${{`"
            )));
        };
        let name = &body[..end];
        if !is_name(name) {
            return Err(Error::Config(format!(
                "template line {line}: `${{{name}}}` is not a plain variable"
            )));
        }
        pieces.push(Piece::Var(name));
        rest = &body[end + 1..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// The variables a template uses.
pub fn variables(template: &str) -> Result<BTreeSet<String>, Error> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(name) => Some(name.to_owned()),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Replaces every `${VAR}` with its value; a variable without a value is an error. Values that
/// are not used are fine (one set of variables can serve several templates).
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len());
    let mut missing = BTreeSet::new();
    for piece in parse(template)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    missing.insert(name);
                }
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(Error::Config(format!(
            "template variables without a value: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn replaces_every_variable_and_keeps_the_rest() {
        let out = render("a ${X} b ${Y_2}${X}", &vars(&[("X", "1"), ("Y_2", "two")])).unwrap();
        assert_eq!(out, "a 1 b two1");
    }

    #[test]
    fn refuses_a_variable_without_a_value() {
        let err = render("port ${PORT} ${HOST}", &vars(&[("PORT", "1")])).unwrap_err();
        assert!(err.to_string().contains("HOST"), "{err}");
    }

    #[test]
    fn refuses_dollar_signs_envsubst_would_expand_differently() {
        for bad in ["cost $5", "$HOME", "${}", "${a-b}", "${OPEN"] {
            assert!(render(bad, &vars(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_the_variables_a_template_uses() {
        let names = variables("${B} ${A} ${B}").unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["A", "B"]);
    }
}
