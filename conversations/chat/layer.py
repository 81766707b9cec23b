"""The channel layer: channels-redis's Pub/Sub layer, with sockets of this process served first.

Most sockets of a conversation are usually on the process that runs its
reply. Through the stock layer every delta still goes to Redis and back: one
PUBLISH, one read on the subscription, a msgpack round trip, per delta and per
process. Here:

- A message for a group or channel with members in this process is put on
  their queues directly, as the dict it is (no serialisation, no Redis).
- It is published to Redis only for other processes, tagged with this
  process's origin so that our own subscription drops it unread.
- Lossy messages (a reply's deltas: a socket that misses one sees the gap in
  offsets and asks the reply for its text) are not published at all while
  Redis says no other process listens to the group: PUBLISH answers how many
  subscribers got it, so after a delta only this process received, the next
  deltas of that group stay local for a second, then one is published again
  to ask. A process that starts listening to such a group says so at once (a
  "hello" on the group's channel), which ends the quiet at every publisher.
  Only the conversations' groups get lossy messages (`LOSSY_GROUPS`), so only
  joining one of those says hello: a quiet is only ever kept, and only ever
  read, for them.
- Everything else (a reply's start and end, stop and sync requests, member
  news) is always published. Several messages at once (`group_send_many`: what
  one write announced) go in one pipeline: one round trip to Redis, not one each.
- A reply's own channel is local (`new_local_channel`): nothing outside this
  process ever addresses it (stop and sync requests reach it through its control
  group), so it needs no subscription in Redis, and it is dropped when the reply
  ends (`forget_channel`).

Built on channels-redis 4.3's Pub/Sub layer (pinned); it reaches into the
shard's connection for PUBLISH's answer, and tests/test_layer.py covers it.
"""

from __future__ import annotations

import asyncio
import uuid

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close

QUIET_SECONDS = 1.0  # how long a group's deltas stay local before a publish asks again
HELLO = b"\x00hello"
# The groups that get lossy messages: a conversation's sockets (chat/broadcast.py's
# conversation_group, to which broadcast.publish sends a reply's deltas). A lossy send to
# any other group is published like any message, so joining those needs no hello.
LOSSY_GROUPS = ("conversation.",)


class LocalFirstShard(RedisSingleShardConnection):
    def _receive_message(self, message):
        if message is None:
            return
        data = message["data"]
        layer: LocalFirstLoopLayer = self.channel_layer
        origin, payload = data[: len(layer.origin)], data[len(layer.origin):]
        if origin == layer.origin:
            return  # published by this process: its members here have it already
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        if payload == HELLO:
            layer.quiet.pop(name, None)  # another process listens to this group now
            return
        super()._receive_message({"channel": name, "data": payload})


class LocalFirstLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shards = [LocalFirstShard(shard.host, self) for shard in self._shards]
        self.origin = uuid.uuid4().hex[:16].encode()
        self.quiet: dict[str, float] = {}  # group channel -> until when nobody else listens to it

    async def _publish(self, name: str, payload: bytes) -> int:
        """PUBLISH through the shard's connection, and how many subscriptions received it."""
        shard = self._get_shard(name)
        async with shard._lock:
            shard._ensure_redis()
            return await shard._redis.publish(name, self.origin + payload)

    async def _publish_many(self, shard, items: list[tuple[str, bytes]]) -> list[int]:
        """PUBLISH each (name, payload) in one pipeline; how many subscriptions received each."""
        async with shard._lock:
            shard._ensure_redis()
            async with shard._redis.pipeline(transaction=False) as pipe:
                for name, payload in items:
                    pipe.publish(name, self.origin + payload)
                return await pipe.execute()

    def _heard(self, name: str, receivers: int, here: bool) -> None:
        """Remember whether another process received what was just published to a lossy group."""
        if receivers <= (1 if here else 0):
            self.quiet[name] = asyncio.get_running_loop().time() + QUIET_SECONDS
        else:
            self.quiet.pop(name, None)

    def _deliver_here(self, names, message: dict) -> None:
        for name in names:
            queue = self.channels.get(name)
            if queue is not None:
                queue.put_nowait(message)

    async def send(self, channel, message):
        if channel in self.channels:
            self.channels[channel].put_nowait(message)
            return
        await self._publish(channel, self.channel_layer.serialize(message))

    async def group_send(self, group, message):
        await self._group_send(group, message, lossy=False)

    async def group_send_lossy(self, group, message):
        """A message a member may miss (it recovers): kept in this process while no other listens.

        Only for LOSSY_GROUPS, whose new members say hello; to another group it is always published.
        """
        await self._group_send(group, message, lossy=group.startswith(LOSSY_GROUPS))

    async def _group_send(self, group, message, lossy: bool) -> None:
        name = self._get_group_channel_name(group)
        here = self.groups.get(name, ())
        self._deliver_here(list(here), message)
        if lossy and self.quiet.get(name, 0.0) > asyncio.get_running_loop().time():
            return
        receivers = await self._publish(name, self.channel_layer.serialize(message))
        if group.startswith(LOSSY_GROUPS):
            self._heard(name, receivers, bool(here))

    async def group_send_many(self, events: list[tuple[str, dict]]) -> None:
        """Send each (group, message) in order, as group_send would, in one pipeline per shard.

        Members here get each message at once; other processes through Redis, one round trip
        for a run of messages whose groups share a shard (all of them, with one Redis). On a
        failure nothing tells which of a failed pipeline's messages Redis published.
        """
        runs: list[tuple[object, list[tuple[str, str, bytes, bool]]]] = []
        for group, message in events:
            name = self._get_group_channel_name(group)
            here = self.groups.get(name, ())
            self._deliver_here(list(here), message)
            shard = self._get_shard(name)
            if not runs or runs[-1][0] is not shard:
                runs.append((shard, []))
            runs[-1][1].append((group, name, self.channel_layer.serialize(message), bool(here)))
        for shard, run in runs:
            receivers = await self._publish_many(shard, [(name, payload) for _group, name, payload, _here in run])
            for (group, name, _payload, here), count in zip(run, receivers):
                if group.startswith(LOSSY_GROUPS):
                    self._heard(name, count, here)

    async def group_add(self, group, channel):
        name = self._get_group_channel_name(group)
        first = name not in self.groups
        await super().group_add(group, channel)
        if first and group.startswith(LOSSY_GROUPS):
            await self._publish(name, HELLO)  # any process keeping this group's deltas to itself, stop

    async def new_local_channel(self, prefix: str = "local.") -> str:
        """A channel that only this process sends to: a queue here, no subscription in Redis."""
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        self.channels[channel] = asyncio.Queue()
        return channel

    def forget_channel(self, channel: str) -> None:
        """Drop a local channel whose reader is done (it has left its groups)."""
        self.channels.pop(channel, None)

    async def receive(self, channel):
        """The stock receive, but a message delivered here is already a dict: no deserialising."""
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        queue = self.channels[channel]
        try:
            message = await queue.get()
        except (TimeoutError, asyncio.CancelledError, GeneratorExit):
            # As channels-redis does: a cancelled receive is a consumer leaving; unsubscribe.
            if channel in self.channels:
                del self.channels[channel]
                try:
                    await self._get_shard(channel).unsubscribe(channel)
                except BaseException:
                    pass
            raise
        return message if isinstance(message, dict) else self.channel_layer.deserialize(message)

    async def flush(self):
        self.quiet.clear()
        await super().flush()


class LocalFirstPubSubLayer(RedisPubSubChannelLayer):
    """settings.CHANNEL_LAYERS' backend with REDIS_URL (one LocalFirstLoopLayer per event loop)."""

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = LocalFirstLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
