"""Activities: linkage (query) activities, hub activities, and the sample agencies' providers."""
