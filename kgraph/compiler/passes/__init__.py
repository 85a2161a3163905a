"""Graph passes: simplification, shape inference, fusion, memory planning, and the pipeline."""
