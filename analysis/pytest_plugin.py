"""pytest plugin (entry point ``pytest11``): precision-emulation checks for users'
models. Not built yet."""
