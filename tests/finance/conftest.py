from tests.finance.browser import chromium, pages, server

__all__ = ["chromium", "pages", "server"]
