"""The health plane protocol (generated stubs live beside this file)."""
