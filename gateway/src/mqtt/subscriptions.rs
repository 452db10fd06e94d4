//! The subscriptions of one gateway's MQTT sessions, indexed by filter level, so a
//! message's topic finds its subscribers without trying every filter.

use std::collections::HashMap;
use std::hash::Hash;

/// Subscriptions by topic filter: each holds, per key (a session, or a session within a
/// shared group), a value (its options).
#[derive(Debug)]
pub struct Subscriptions<K, V> {
    root: Node<K, V>,
    len: usize,
}

#[derive(Debug)]
struct Node<K, V> {
    /// Filters that end here.
    here: HashMap<K, V>,
    /// Filters that end here with `#`.
    multi: HashMap<K, V>,
    /// The `+` level.
    single: Option<Box<Node<K, V>>>,
    children: HashMap<String, Node<K, V>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            here: HashMap::new(),
            multi: HashMap::new(),
            single: None,
            children: HashMap::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.multi.is_empty()
            && self.single.is_none()
            && self.children.is_empty()
    }
}

impl<K: Eq + Hash + Clone, V> Default for Subscriptions<K, V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Eq + Hash + Clone, V> Subscriptions<K, V> {
    /// Adds or replaces the subscription of `key` to `filter` (a valid filter); returns
    /// the value it replaced.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            match *level {
                "#" if i == levels.len() - 1 => {
                    let old = node.multi.insert(key, value);
                    self.len += usize::from(old.is_none());
                    return old;
                }
                "+" => node = node.single.get_or_insert_with(Box::default),
                l => node = node.children.entry(l.to_string()).or_default(),
            }
        }
        let old = node.here.insert(key, value);
        self.len += usize::from(old.is_none());
        old
    }

    /// Removes the subscription of `key` to `filter`; returns its value.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every subscription whose filter matches `topic`, as `(key, value)`. A key that
    /// holds several matching filters appears once per filter; the caller merges them
    /// (highest QoS, every subscription identifier).
    pub fn matching<'a>(&'a self, topic: &str) -> Vec<(&'a K, &'a V)> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut out = Vec::new();
        // Topics starting with '$' are not matched by a leading wildcard.
        let dollar = topic.starts_with('$');
        collect(&self.root, &levels, 0, dollar, &mut out);
        out
    }
}

fn remove_at<K: Eq + Hash, V>(node: &mut Node<K, V>, levels: &[&str], key: &K) -> Option<V> {
    let Some((first, rest)) = levels.split_first() else {
        return node.here.remove(key);
    };
    if *first == "#" && rest.is_empty() {
        return node.multi.remove(key);
    }
    if *first == "+" {
        let child = node.single.as_deref_mut()?;
        let r = remove_at(child, rest, key);
        if child.is_empty() {
            node.single = None;
        }
        r
    } else {
        let child = node.children.get_mut(*first)?;
        let r = remove_at(child, rest, key);
        if child.is_empty() {
            node.children.remove(*first);
        }
        r
    }
}

fn collect<'a, K, V>(
    node: &'a Node<K, V>,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    out: &mut Vec<(&'a K, &'a V)>,
) {
    let first = depth == 0 && dollar;
    if !first {
        // "a/#" matches "a" and everything below it.
        out.extend(node.multi.iter());
    }
    let Some(level) = levels.get(depth) else {
        out.extend(node.here.iter());
        return;
    };
    if let Some(child) = node.children.get(*level) {
        collect(child, levels, depth + 1, dollar, out);
    }
    if !first && let Some(single) = &node.single {
        collect(single, levels, depth + 1, dollar, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_protocols::mqtt::topic;

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string())
        ]
    }

    fn topic_name() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..4).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..4),
            any::<bool>(),
        )
            .prop_map(|(mut l, multi)| {
                if multi {
                    l.push("#".into());
                }
                l.join("/")
            })
    }

    proptest! {
        /// The index finds exactly what trying every filter finds.
        #[test]
        fn agrees_with_matching_every_filter(
            filters in proptest::collection::vec(filter(), 1..20),
            topics in proptest::collection::vec(topic_name(), 1..20),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut subs = Subscriptions::default();
            let mut live: Vec<(usize, String)> = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                subs.insert(f, i, f.clone());
                live.push((i, f.clone()));
            }
            for r in removed {
                let (i, f) = live.remove(r.index(live.len()));
                prop_assert_eq!(subs.remove(&f, &i), Some(f));
                if live.is_empty() { break; }
            }
            prop_assert_eq!(subs.len(), live.len());
            for t in &topics {
                let mut got: Vec<usize> = subs.matching(t).into_iter().map(|(k, _)| *k).collect();
                got.sort();
                let want: Vec<usize> = live.iter().filter(|(_, f)| topic::matches(f, t)).map(|(i, _)| *i).collect();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }

    #[test]
    fn overlapping_filters_of_one_session_all_match_and_removal_prunes() {
        let mut subs = Subscriptions::default();
        subs.insert("a/+", 1, 1);
        subs.insert("a/#", 1, 2);
        subs.insert("a/b", 2, 0);
        let mut got: Vec<(i32, i32)> = subs
            .matching("a/b")
            .into_iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        got.sort();
        assert_eq!(got, vec![(1, 1), (1, 2), (2, 0)]);
        assert_eq!(subs.insert("a/+", 1, 5), Some(1));
        for (f, k) in [("a/+", 1), ("a/#", 1), ("a/b", 2)] {
            assert!(subs.remove(f, &k).is_some());
        }
        assert!(subs.is_empty() && subs.root.is_empty());
        assert_eq!(subs.remove("a/b", &2), None);
    }
}
