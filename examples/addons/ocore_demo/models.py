# The demo changes this constant between its two deployments.
GREETING = "Hello from the first version"
