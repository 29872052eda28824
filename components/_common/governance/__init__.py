"""The fairness and explanation views (reports' sections, plots, the model card's rows), drawn from each stage's
stored JSON alone, so the producing stage and the model card render the same thing."""
