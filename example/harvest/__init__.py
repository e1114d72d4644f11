"""The example app: a job that fetches records over HTTP and stores them."""
