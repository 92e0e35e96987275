"""The live dashboard and the admin HTTP API (:mod:`crowdgate.dashboard.views`), behind the admin token
(:mod:`crowdgate.dashboard.auth`)."""
