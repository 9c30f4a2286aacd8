"""What ships: the report (JSON, Markdown, TensorBoard), the deployable bundle, its native model and device build."""
