// The chat page: sign in, conversations with unread counts, messages arriving live from
// GET /events (server-sent events read with fetch, so the identity header can be sent), view
// horizons posted as messages are seen, and the other participant's read receipt.
// Every request goes to this page's own origin: URLs are relative to the service's root.

const ROOT = new URL("..", document.baseURI); // the page is /app/; the API is beside /app
const PAGE_SIZE = 50;
const STREAM_QUIET_LIMIT_MS = 45_000; // three missed `: ping`s at the default 15 s interval
const BACKOFF_MAX_MS = 30_000;
const STABLE_STREAM_MS = 5_000; // a stream that lived this long resets the backoff
const HORIZON_DELAY_MS = 250;

const $ = (selector) => document.querySelector(selector);

const ui = {
  body: document.body,
  connection: $("[data-testid=connection]"),
  connectionText: $(".connection-text"),
  identity: $(".identity"),
  identityName: $(".identity-name"),
  signOut: $(".sign-out"),
  notice: $(".notice"),
  noticeText: $(".notice-text"),
  noticeClose: $(".notice-close"),
  signInSection: $(".sign-in"),
  signInForm: $(".sign-in-form"),
  userId: $("#user-id"),
  token: $("#token"),
  chat: $(".chat"),
  startForm: $(".start-form"),
  participant: $("#participant"),
  conversations: $(".conversations"),
  conversationsEmpty: $(".conversations-empty"),
  title: $("#conversation-title"),
  back: $(".back"),
  scroller: $(".scroller"),
  older: $(".older"),
  messagesEmpty: $(".messages-empty"),
  messages: $(".messages"),
  composerForm: $(".composer-form"),
  composer: $("#composer"),
};

// --- state -------------------------------------------------------------------------------------

let session = null; // {userId, token, generation}
let generation = 0; // bumped on sign-out: late answers of an old session are dropped
let conversations = new Map(); // id -> {id, name, inserted_at, lastIndex, myHorizon, otherHorizon}
let openId = null;
let thread = null; // the open conversation's messages: {id, byIndex: Map, lowest, highest}
let lastEventId = null;
let stream = null; // {controller}
let draftKey = null; // the Idempotency-Key of the message being composed
let horizonTimer = null;
let horizonPosting = false;

class ApiError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

// --- talking to the service --------------------------------------------------------------------

function url(path) {
  return new URL(path, ROOT);
}

function authHeaders() {
  const headers = {};
  if (!session) return headers; // signed out meanwhile: the answer will be dropped
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (session.sendUserId) headers["User-Id"] = session.userId;
  return headers;
}

async function errorOf(response) {
  let text = "";
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") text = body.error;
  } catch {
    // not JSON: the status line says what there is to say
  }
  if (!text) text = `The service answered ${response.status} ${response.statusText}`.trim();
  if (response.status === 503) {
    const after = response.headers.get("Retry-After");
    if (after) text += ` (retry after ${after} s)`;
  }
  return new ApiError(response.status, text);
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path), init);
  } catch {
    throw new ApiError(0, "The service cannot be reached: check the connection and try again.");
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

// --- notices and connection state --------------------------------------------------------------

function showNotice(text) {
  ui.noticeText.textContent = text;
  ui.notice.hidden = false;
}

function showError(error) {
  showNotice(error?.message ?? String(error));
}

function setConnection(state, text) {
  ui.connection.dataset.state = state;
  ui.connectionText.textContent = text;
}

// --- conversations -----------------------------------------------------------------------------

function unreadOf(conversation) {
  if (conversation.lastIndex === null) return 0;
  return Math.max(0, conversation.lastIndex - conversation.myHorizon);
}

function upsertConversation(found) {
  const known = conversations.get(found.id);
  const conversation = known ?? {
    id: found.id,
    name: "",
    inserted_at: found.inserted_at,
    lastIndex: null,
    myHorizon: 0,
    otherHorizon: null,
  };
  if (found.name !== undefined) conversation.name = found.name;
  if (typeof found.last_index === "number") {
    conversation.lastIndex = Math.max(conversation.lastIndex ?? 0, found.last_index);
    conversation.myHorizon = Math.max(conversation.myHorizon, found.last_index - found.unread);
  }
  conversations.set(conversation.id, conversation);
  return conversation;
}

async function loadConversations() {
  const mine = generation;
  const answer = await api("GET", "conversations?unread=true");
  if (mine !== generation) return;
  for (const found of answer.conversations) upsertConversation(found);
  renderConversations();
}

// One button per conversation, kept across renders (updated in place, reordered by moving),
// so focus, clicks in flight and screen readers' position survive a live update.
const listItems = new Map(); // conversation id -> {item, button, avatar, name, badge, spoken}

function listItem(conversation) {
  const found = listItems.get(conversation.id);
  if (found) return found;
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "conversation";
  button.dataset.testid = "conversation";
  button.dataset.conversationId = conversation.id;
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  avatar.dataset.hue = String(Number(conversation.id) % 5);
  const name = document.createElement("span");
  name.className = "name";
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.testid = "unread";
  badge.setAttribute("aria-hidden", "true");
  const spoken = document.createElement("span");
  spoken.className = "visually-hidden";
  button.append(avatar, name, badge, spoken);
  button.addEventListener("click", () => openConversation(conversation.id));
  item.append(button);
  const made = { item, button, avatar, name, badge, spoken };
  listItems.set(conversation.id, made);
  return made;
}

function renderConversations() {
  const ordered = [...conversations.values()].sort((a, b) => Number(b.id) - Number(a.id));
  for (const [id, { item }] of listItems) {
    if (!conversations.has(id)) {
      item.remove();
      listItems.delete(id);
    }
  }
  ordered.forEach((conversation, position) => {
    const { item, button, avatar, name, badge, spoken } = listItem(conversation);
    if (conversation.id === openId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
    avatar.textContent = (conversation.name || "?").trim().charAt(0).toUpperCase() || "?";
    name.textContent = conversation.name || `Conversation ${conversation.id}`;
    const unread = String(unreadOf(conversation));
    if (badge.textContent !== unread) {
      badge.textContent = unread;
      badge.dataset.count = unread;
      spoken.textContent = unread === "0" ? "" : `, ${unread} unread`;
    }
    if (ui.conversations.children[position] !== item) {
      ui.conversations.insertBefore(item, ui.conversations.children[position] ?? null);
    }
  });
  ui.conversationsEmpty.hidden = ordered.length > 0;
  const total = ordered.reduce((sum, conversation) => sum + unreadOf(conversation), 0);
  document.title = total > 0 ? `(${total}) messenger – chat` : "messenger – chat";
}

async function startConversation(otherId) {
  try {
    const answer = await api("POST", "conversations", {
      participant_ids: [Number(session.userId), Number(otherId)],
    });
    upsertConversation(answer.conversation);
    await loadConversations(); // the list names it after the other participant
    await openConversation(answer.conversation.id);
    return true;
  } catch (error) {
    const existing = /already exists with id (\d+)/.exec(error.message);
    if (error instanceof ApiError && existing) {
      showNotice(`${error.message}: it is open now.`);
      if (!conversations.has(existing[1])) await loadConversations();
      await openConversation(existing[1]);
      return true;
    }
    showError(error);
    return false;
  }
}

// --- the open conversation ---------------------------------------------------------------------

const seen = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      if (entry.isIntersecting) noteSeen(Number(entry.target.dataset.index));
    }
  },
  { root: ui.scroller, threshold: 0.6 },
);
let highestSeen = 0;

function setView(view) {
  ui.body.dataset.view = view;
}

async function openConversation(id) {
  const conversation = conversations.get(id);
  openId = id;
  ui.title.textContent = conversation?.name || `Conversation ${id}`;
  ui.composerForm.hidden = false;
  setView("conversation");
  renderConversations();
  ui.composer.focus();
  await loadThread();
}

// The open conversation's newest page, from scratch (on opening, and after the stream reset).
async function loadThread() {
  thread = { id: openId, byIndex: new Map(), lowest: null, highest: 0 };
  highestSeen = 0;
  seen.disconnect();
  ui.messages.replaceChildren();
  ui.messagesEmpty.hidden = true;
  ui.older.hidden = true;
  await loadLatest();
}

async function loadPage(query) {
  const mine = thread;
  const answer = await api("GET", `conversations/${mine.id}/messages?${query}`);
  if (mine !== thread) return null; // another conversation was opened meanwhile
  return answer.messages;
}

async function loadLatest() {
  try {
    // A cursor above every index: the newest page, whatever the list last said.
    const messages = await loadPage(`limit=${PAGE_SIZE}&before_index=9007199254740991`);
    if (messages === null) return;
    addMessages(thread.id, messages, { scroll: "bottom" });
    if (messages.length < PAGE_SIZE) thread.lowest = Math.min(thread.lowest ?? 1, 1);
    renderThreadChrome();
  } catch (error) {
    showError(error);
  }
}

async function loadOlder() {
  if (!thread || !thread.lowest || thread.lowest <= 1) return;
  try {
    const before = thread.lowest;
    const messages = await loadPage(`limit=${PAGE_SIZE}&before_index=${before}`);
    if (messages === null) return;
    if (messages.length < PAGE_SIZE) thread.lowest = 1;
    addMessages(thread.id, messages, { scroll: "keep" });
    renderThreadChrome();
  } catch (error) {
    showError(error);
  }
}

async function fillGap(after) {
  try {
    const messages = await loadPage(`limit=${PAGE_SIZE}&after_index=${after}`);
    if (messages !== null) addMessages(thread.id, messages, { scroll: "follow" });
  } catch (error) {
    showError(error);
  }
}

function renderThreadChrome() {
  if (!thread) return;
  ui.older.hidden = !thread.lowest || thread.lowest <= 1;
  ui.messagesEmpty.hidden = thread.byIndex.size > 0;
  if (thread.byIndex.size === 0) ui.messagesEmpty.textContent = "No messages yet: say hello.";
  renderReceipt();
}

function nearBottom() {
  const { scrollTop, scrollHeight, clientHeight } = ui.scroller;
  return scrollHeight - scrollTop - clientHeight < 80;
}

function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (when.toDateString() === new Date().toDateString()) return time;
  return `${when.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

function messageElement(message) {
  const item = document.createElement("li");
  const mine = String(message.user_id) === session.userId;
  item.className = mine ? "message mine" : "message theirs";
  item.dataset.testid = "message";
  item.dataset.index = String(message.index);
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const meta = document.createElement("p");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = mine ? "You" : message.username;
  if (mine && !session.name) {
    session.name = message.username; // no route says who "I" am: my own messages do
    ui.identityName.textContent = `${message.username} (user ${session.userId})`;
  }
  const time = document.createElement("time");
  time.dateTime = message.inserted_at;
  time.title = new Date(message.inserted_at).toLocaleString();
  time.textContent = formatTime(message.inserted_at);
  meta.append(author, " ", time);
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = message.content;
  bubble.append(meta, text);
  item.append(bubble);
  return item;
}

// Messages of the open conversation, each shown once, in index order, whatever order they
// arrive in (a page, the send's own answer, the stream, a replay after a reconnect).
function addMessages(conversationId, messages, { scroll }) {
  if (!thread || thread.id !== conversationId) return;
  const follow = scroll === "bottom" || (scroll === "follow" && nearBottom());
  const heightBefore = ui.scroller.scrollHeight;
  const topBefore = ui.scroller.scrollTop;
  for (const message of messages) {
    const index = Number(message.index);
    if (thread.byIndex.has(index)) continue;
    thread.byIndex.set(index, message);
    thread.lowest = thread.lowest === null ? index : Math.min(thread.lowest, index);
    thread.highest = Math.max(thread.highest, index);
    const element = messageElement(message);
    const after = [...ui.messages.querySelectorAll("li.message")].find(
      (other) => Number(other.dataset.index) > index,
    );
    ui.messages.insertBefore(element, after ?? null);
    seen.observe(element);
  }
  renderThreadChrome();
  if (follow) ui.scroller.scrollTop = ui.scroller.scrollHeight;
  else if (scroll === "keep") {
    ui.scroller.scrollTop = topBefore + (ui.scroller.scrollHeight - heightBefore);
  }
}

// The other participant's read receipt: one element, moved below the last message they saw.
const receipt = document.createElement("li");
receipt.className = "receipt";
receipt.dataset.testid = "read-receipt";

function renderReceipt() {
  const conversation = conversations.get(openId);
  if (!thread || !conversation || !conversation.otherHorizon) {
    receipt.remove();
    return;
  }
  const horizon = conversation.otherHorizon;
  const shown = [...ui.messages.querySelectorAll("li.message")].filter(
    (element) => Number(element.dataset.index) <= horizon,
  );
  receipt.dataset.index = String(horizon);
  receipt.textContent = `Seen by ${conversation.name || "the other participant"}`;
  const anchor = shown.at(-1);
  if (!anchor) ui.messages.prepend(receipt);
  else if (anchor.nextElementSibling !== receipt) anchor.after(receipt);
}

// --- the view horizon --------------------------------------------------------------------------

function noteSeen(index) {
  if (document.visibilityState !== "visible") return;
  highestSeen = Math.max(highestSeen, index);
  scheduleHorizon();
}

function scheduleHorizon() {
  clearTimeout(horizonTimer);
  horizonTimer = setTimeout(postHorizon, HORIZON_DELAY_MS);
}

async function postHorizon() {
  const conversation = conversations.get(openId);
  if (!conversation || horizonPosting || highestSeen <= conversation.myHorizon) return;
  horizonPosting = true;
  const index = highestSeen;
  try {
    await api("POST", `conversations/${conversation.id}/view_horizon`, { index });
    conversation.myHorizon = Math.max(conversation.myHorizon, index);
    renderConversations();
  } catch (error) {
    showError(error);
  } finally {
    horizonPosting = false;
  }
  if (conversation.id === openId && highestSeen > conversation.myHorizon) scheduleHorizon();
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible" || !thread) return;
  // What is on screen now counts as seen: the observer does not repeat itself.
  for (const element of ui.messages.querySelectorAll("li.message")) {
    const box = element.getBoundingClientRect();
    const view = ui.scroller.getBoundingClientRect();
    if (box.bottom > view.top && box.top < view.bottom) noteSeen(Number(element.dataset.index));
  }
});

// --- sending -----------------------------------------------------------------------------------

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // outside a secure context
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function send() {
  const content = ui.composer.value;
  if (!thread || content.trim() === "") return;
  draftKey ??= newKey();
  const conversationId = thread.id;
  try {
    const answer = await api(
      "POST",
      `conversations/${conversationId}/messages`,
      { content },
      { "Idempotency-Key": draftKey },
    );
    const sent = answer.message;
    if (ui.composer.value === content) {
      ui.composer.value = "";
      fitComposer();
    }
    draftKey = null;
    // The answer's types differ from the list's (numbers there): shown the list's way.
    addMessages(
      conversationId,
      [
        {
          id: String(sent.id),
          content: sent.content,
          user_id: String(sent.user_id),
          channel_id: String(sent.conversation_id),
          index: String(sent.index),
          inserted_at: sent.inserted_at,
          username: sent.username,
        },
      ],
      { scroll: "bottom" },
    );
    noteLastIndex(conversationId, Number(sent.index));
  } catch (error) {
    showError(error); // the draft stays, with its key: sending again cannot make a duplicate
  }
}

// The composer grows with its text, up to the height the stylesheet allows.
function fitComposer() {
  ui.composer.style.height = "auto";
  ui.composer.style.height = `${ui.composer.scrollHeight + 2}px`;
}

ui.composer.addEventListener("input", () => {
  draftKey = null; // another text is another message
  fitComposer();
});
ui.composer.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
ui.composerForm.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

function noteLastIndex(conversationId, index) {
  const conversation = conversations.get(conversationId);
  if (!conversation) return;
  conversation.lastIndex = Math.max(conversation.lastIndex ?? 0, index);
  renderConversations();
}

// --- the live stream ---------------------------------------------------------------------------

const handlers = {
  message(data) {
    const index = Number(data.message.index);
    if (!conversations.has(data.conversation_id)) {
      loadConversations().catch(showError);
    }
    noteLastIndex(data.conversation_id, index);
    if (thread && thread.id === data.conversation_id) {
      const gap = thread.byIndex.size > 0 && index > thread.highest + 1;
      if (gap) fillGap(thread.highest);
      else addMessages(data.conversation_id, [data.message], { scroll: "follow" });
    }
  },
  conversation(data) {
    upsertConversation({ ...data.conversation, last_index: 0, unread: 0 });
    renderConversations();
    if (data.conversation.id === openId) ui.title.textContent = data.conversation.name;
  },
  horizon(data) {
    const conversation = conversations.get(data.conversation_id);
    if (!conversation) return;
    const index = Number(data.index);
    if (data.user_id === session.userId) {
      conversation.myHorizon = index;
      renderConversations();
    } else {
      conversation.otherHorizon = index;
      if (conversation.id === openId) renderReceipt();
    }
  },
  reset() {
    resync();
  },
};

function dispatch(name, data) {
  const handler = handlers[name];
  if (!handler) return;
  let parsed;
  try {
    parsed = JSON.parse(data);
  } catch {
    console.warn(`ignored an event "${name}" whose data is not JSON`);
    return;
  }
  handler(parsed);
}

// Server-sent events (the HTML standard's parser): fields per line, an empty line dispatches.
// The id of every event, and of an id line without data, is what a reconnect resumes after.
async function readEvents(response, onActivity) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "";
  let data = [];
  let id = lastEventId;
  const line = (text) => {
    if (text === "") {
      lastEventId = id;
      if (data.length > 0) dispatch(name || "message", data.join("\n"));
      name = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) id = value;
    else if (field === "retry" && /^\d+$/.test(value)) stream.retryMs = Number(value);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onActivity();
    buffer += value;
    let start = 0;
    for (;;) {
      let end = start;
      while (end < buffer.length && buffer[end] !== "\n" && buffer[end] !== "\r") end += 1;
      if (end === buffer.length) break;
      if (buffer[end] === "\r" && end + 1 === buffer.length) break; // "\r\n" may be split
      line(buffer.slice(start, end));
      start = end + (buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1);
    }
    buffer = buffer.slice(start);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// Open the stream and keep it open: reconnect after any drop with exponential backoff and
// jitter, resuming after the last event seen. `onOpen` runs once the first stream is open.
async function runStream(onOpen) {
  const mine = { controller: new AbortController(), retryMs: 1000 };
  stream = mine;
  const stopped = () => mine.controller.signal.aborted;
  let attempt = 0;
  let refusedResume = false;
  while (!stopped()) {
    const attemptController = new AbortController();
    const abortAttempt = () => attemptController.abort();
    mine.controller.signal.addEventListener("abort", abortAttempt);
    let quietTimer = null;
    const activity = () => {
      clearTimeout(quietTimer);
      quietTimer = setTimeout(abortAttempt, STREAM_QUIET_LIMIT_MS);
    };
    let openedAt = null;
    let failure = null;
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      const resuming = lastEventId !== null;
      if (resuming) headers["Last-Event-ID"] = lastEventId;
      activity();
      const response = await fetch(url("events"), {
        headers,
        cache: "no-store",
        signal: attemptController.signal,
      });
      if (!response.ok) {
        const error = await errorOf(response);
        if (response.status === 400 && resuming && !refusedResume) {
          // The id is not accepted any more: start afresh and reload what the stream missed.
          refusedResume = true;
          lastEventId = null;
          showNotice(`${error.message}: reloading the conversations.`);
          await resync();
          continue;
        }
        if (response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status)) {
          setConnection("stopped", `Not live: ${error.message}`);
          showNotice(`Live updates stopped: GET /events answered ${error.status}: ${error.message}`);
          return;
        }
        throw error;
      }
      refusedResume = false;
      openedAt = performance.now();
      setConnection("live", "Live");
      if (onOpen) {
        const first = onOpen;
        onOpen = null;
        first();
      } else if (!resuming) {
        resync(); // no position to resume from: what happened meanwhile comes from REST
      }
      await readEvents(response, activity);
    } catch (error) {
      failure = error;
    } finally {
      clearTimeout(quietTimer);
      mine.controller.signal.removeEventListener("abort", abortAttempt);
    }
    if (stopped()) return;
    if (openedAt !== null && performance.now() - openedAt >= STABLE_STREAM_MS) attempt = 0;
    const ceiling = Math.min(BACKOFF_MAX_MS, mine.retryMs * 2 ** attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    attempt += 1;
    const why = failure instanceof ApiError ? `${failure.message}. ` : "";
    setConnection("reconnecting", `${why}Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    if (onOpen && failure) {
      // Before the first stream opens the lists still load, so the page is usable.
      const first = onOpen;
      onOpen = null;
      first();
    }
    await sleep(delay, mine.controller.signal);
    if (!stopped()) setConnection("connecting", "Connecting…");
  }
}

async function resync() {
  try {
    await loadConversations();
    if (thread) await loadThread();
  } catch (error) {
    showError(error);
  }
}

// --- signing in and out ------------------------------------------------------------------------

function userIdFromToken(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
    const sub = String(claims.sub ?? "");
    return /^[1-9][0-9]*$/.test(sub) ? sub : null;
  } catch {
    return null;
  }
}

async function signIn() {
  const typed = ui.userId.value.trim();
  const token = ui.token.value.trim();
  ui.notice.hidden = true;
  let userId = typed;
  if (token && !typed) userId = userIdFromToken(token);
  if (!token && !/^[1-9][0-9]*$/.test(typed)) {
    showNotice("Type a user id: a positive whole number such as 1.");
    ui.userId.focus();
    return;
  }
  if (token && !userId) {
    showNotice("The token has no numeric sub claim: type the user id as well.");
    ui.userId.focus();
    return;
  }
  generation += 1;
  // In jwt mode a typed id is sent too, so the service checks that it is the token's.
  session = { userId, token: token || null, sendUserId: !token || Boolean(typed), generation };
  ui.token.value = ""; // the token lives in `session` only
  conversations = new Map();
  listItems.clear();
  ui.conversations.replaceChildren();
  openId = null;
  thread = null;
  lastEventId = null;
  try {
    await loadConversations(); // says at once whether the service accepts this identity
  } catch (error) {
    session = null;
    showError(error);
    return;
  }
  ui.identityName.textContent = `user ${userId}`;
  ui.identity.hidden = false;
  ui.signOut.hidden = false;
  ui.signInSection.hidden = true;
  ui.chat.hidden = false;
  ui.composerForm.hidden = true;
  ui.messages.replaceChildren();
  ui.title.textContent = "No conversation open";
  ui.messagesEmpty.hidden = false;
  setView("list");
  setConnection("connecting", "Connecting…");
  // Once the stream holds a position, reload what REST knows: nothing falls between the two.
  runStream(() => loadConversations().catch(showError));
  ui.participant.focus();
}

function signOut() {
  generation += 1;
  clearTimeout(horizonTimer);
  stream?.controller.abort();
  stream = null;
  session = null;
  conversations = new Map();
  openId = null;
  thread = null;
  lastEventId = null;
  draftKey = null;
  seen.disconnect();
  listItems.clear();
  ui.conversations.replaceChildren();
  ui.messages.replaceChildren();
  ui.composer.value = "";
  ui.identity.hidden = true;
  ui.signOut.hidden = true;
  ui.chat.hidden = true;
  ui.signInSection.hidden = false;
  ui.notice.hidden = true;
  setView("sign-in");
  document.title = "messenger – chat";
  setConnection("signed-out", "Signed out");
  ui.userId.focus();
}

ui.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  signIn();
});
ui.signOut.addEventListener("click", signOut);
ui.noticeClose.addEventListener("click", () => {
  ui.notice.hidden = true;
});
ui.startForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const other = ui.participant.value.trim();
  if (!/^[1-9][0-9]*$/.test(other)) {
    showNotice("Type the other user's id: a positive whole number.");
    ui.participant.focus();
    return;
  }
  if (await startConversation(other)) ui.participant.value = "";
});
ui.older.addEventListener("click", loadOlder);
ui.back.addEventListener("click", () => {
  setView("list");
  ui.conversations.querySelector(`[data-conversation-id="${openId}"]`)?.focus();
});

ui.userId.focus();
