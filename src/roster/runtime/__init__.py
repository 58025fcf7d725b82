"""The runtime: the dispatcher that wakes agents when there is work, and the runners they think with."""
