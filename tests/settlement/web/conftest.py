from tests.settlement.web.browser import chromium, pages, server

__all__ = ["chromium", "pages", "server"]
