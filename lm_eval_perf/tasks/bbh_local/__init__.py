"""``leaderboard_bbh_local``: lm-eval's ``leaderboard_bbh`` read from a local directory of BBH JSON files."""
