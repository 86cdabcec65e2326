"""What runs in the DuckDB process: the client, the SQL binding, fan-out and the ``classify``
command's file walking. Nothing here imports the worker side (no onnxruntime, LanceDB or model
code), so attaching to a remote worker stays light."""
