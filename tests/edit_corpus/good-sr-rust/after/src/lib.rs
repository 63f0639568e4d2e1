/// Parses a comma-separated list of integers.
pub fn parse_list(input: &str) -> Vec<i64> {
    input
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spaces() {
        assert_eq!(parse_list("1, 2,3"), vec![1, 2, 3]);
    }
}
