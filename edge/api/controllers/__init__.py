"""HTTP controllers of the edge agent, one module per resource."""
