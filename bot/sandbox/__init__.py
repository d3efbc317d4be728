"""A local stand-in for Slack: a fake of the Web API the bot calls, and a driver that sends the bot
signed requests the way Slack does. Used by the tests and by the sandbox page."""

from bot.sandbox.driver import Response, SlackDriver
from bot.sandbox.fake_slack import Call, FakeSlack, Message

__all__ = ["Call", "FakeSlack", "Message", "Response", "SlackDriver"]
