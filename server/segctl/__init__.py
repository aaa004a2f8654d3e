"""segctl: the segd admin CLI (``segctl <noun> <verb>``), one module per noun."""
