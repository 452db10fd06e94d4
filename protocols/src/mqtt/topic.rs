//! Topic names and topic filters (section 4.7 of both specifications), shared
//! subscriptions (MQTT 5.0 section 4.8.2).

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("a topic is at least one character long")]
    Empty,
    #[error("a topic name cannot hold the wildcards + or #")]
    WildcardInName,
    #[error("'#' must be the last level of a filter, on its own")]
    BadMultiLevelWildcard,
    #[error("'+' must be a whole level of a filter")]
    BadSingleLevelWildcard,
    #[error("a shared subscription is $share/<group>/<filter>, the group without / + #")]
    BadSharedSubscription,
}

/// A topic name a PUBLISH may carry.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// A topic filter a SUBSCRIBE may carry (after any `$share/<group>/` prefix).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(TopicError::BadMultiLevelWildcard);
        }
        if level.contains('+') && *level != "+" {
            return Err(TopicError::BadSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits `$share/<group>/<filter>` into the group and the filter; `None` for an ordinary
/// filter.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    let (group, inner) = rest
        .split_once('/')
        .ok_or(TopicError::BadSharedSubscription)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicError::BadSharedSubscription);
    }
    validate_filter(inner)?;
    Ok(Some((group, inner)))
}

/// Whether `filter` matches `topic`. Topics starting with `$` are not matched by a filter
/// starting with a wildcard ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // "sport/#" also matches "sport": '#' covers the parent level.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_examples() {
        // 4.7.1.2 multi-level wildcard.
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        // 4.7.1.3 single-level wildcard.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        // 4.7.2 topics beginning with $.
        assert!(!matches("#", "$SYS/broker/load"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/broker/load"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Case matters; no partial levels.
        assert!(!matches("ACCOUNTS", "accounts"));
        assert!(!matches("a/b", "a/bc"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn names_filters_and_shares_are_validated() {
        assert_eq!(validate_name("a/b"), Ok(()));
        assert_eq!(validate_name("/"), Ok(()));
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_filter("sport/tennis/#"), Ok(()));
        assert_eq!(validate_filter("+/+/#"), Ok(()));
        assert_eq!(
            validate_filter("sport/tennis#"),
            Err(TopicError::BadMultiLevelWildcard)
        );
        assert_eq!(
            validate_filter("sport/#/ranking"),
            Err(TopicError::BadMultiLevelWildcard)
        );
        assert_eq!(
            validate_filter("sport+"),
            Err(TopicError::BadSingleLevelWildcard)
        );
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share/g1/a/+"), Ok(Some(("g1", "a/+"))));
        assert_eq!(
            parse_shared("$share/g1"),
            Err(TopicError::BadSharedSubscription)
        );
        assert_eq!(
            parse_shared("$share//a"),
            Err(TopicError::BadSharedSubscription)
        );
        assert_eq!(
            parse_shared("$share/g+/a"),
            Err(TopicError::BadSharedSubscription)
        );
        assert_eq!(
            parse_shared("$share/g/a#"),
            Err(TopicError::BadMultiLevelWildcard)
        );
    }
}
