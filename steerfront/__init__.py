"""steerfront: search the preference/utility Pareto front of steering configurations."""
