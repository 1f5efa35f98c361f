//! The policy's view of one argument of a command: what the shell's expansions make of it
//! (built by the evaluator, read by the knowledge of particular programs).

/// One argument after the shell's expansions, as far as they can be known.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arg {
    /// The text, when every part of it is known.
    pub value: Option<String>,
    /// For path checks: the value, or the known prefix followed by `*`.
    pub pattern: String,
    /// Unquoted glob characters, or unknown parts.
    pub globby: bool,
    /// As written, for messages.
    pub shown: String,
    /// Programs run by substitutions inside it.
    pub programs: Vec<String>,
}

impl Arg {
    pub(crate) fn known(s: &str) -> Self {
        Self {
            value: Some(s.to_string()),
            pattern: s.to_string(),
            globby: false,
            shown: s.to_string(),
            programs: Vec::new(),
        }
    }

    pub(crate) fn unknown(shown: &str) -> Self {
        Self {
            value: None,
            pattern: "*".into(),
            globby: true,
            shown: shown.to_string(),
            programs: Vec::new(),
        }
    }

    /// This argument with another value (an option's value cut out of it).
    pub(crate) fn with_value(&self, v: &str) -> Self {
        Self {
            value: Some(v.to_string()),
            pattern: v.to_string(),
            globby: self.globby,
            shown: v.to_string(),
            programs: self.programs.clone(),
        }
    }
}
