// polychat chat page: talks to this gateway's OpenAI-compatible API; no build step, no CDN.
//
// Markdown: model output is parsed by marked (vendored: marked.umd.js) and the HTML it produces is sanitised by
// DOMPurify (vendored: purify.min.js) before it enters the page; raw HTML written by the model is shown as text,
// never interpreted. Links open in a new tab with rel="noopener noreferrer"; images are not loaded. The page's
// CSP (script-src 'self') would stop an injected script anyway. Everything else is built with textContent.
"use strict";

(() => {
  const STORE = "polychat.conversation.v1";
  const MODEL_STORE = "polychat.model";
  const KEY_STORE = "polychat.apiKey"; // sessionStorage: gone when the tab closes
  // A person is waiting: answers are capped as the CLI's are (polychat chat --max-tokens, default 512).
  const MAX_TOKENS = 512;

  const $ = (id) => document.getElementById(id);
  const els = {
    model: $("model"),
    conversation: $("conversation"),
    empty: $("empty"),
    status: $("status"),
    composer: $("composer"),
    prompt: $("prompt"),
    send: $("send"),
    stop: $("stop"),
    newChat: $("new-chat"),
    keyPanel: $("key-panel"),
    keyForm: $("key-form"),
    keyInput: $("api-key"),
  };

  // -- state -------------------------------------------------------------------------------------------------

  /** @type {{role: string, content: string, provider?: string, model?: string, error?: string, stopped?: boolean}[]} */
  let messages = load();
  let controller = null; // AbortController of the answer being streamed

  function load() {
    try {
      const data = JSON.parse(localStorage.getItem(STORE) || "[]");
      return Array.isArray(data) ? data.filter((m) => m && typeof m.role === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function save() {
    try {
      localStorage.setItem(STORE, JSON.stringify(messages));
    } catch (_) {
      /* storage full or disabled: the conversation still works in this tab */
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  // -- rendering (text only) ---------------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- markdown ---------------------------------------------------------------------------------------------

  const escapeHtml = (text) =>
    String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  marked.use({
    gfm: true,
    breaks: true,
    renderer: {
      // HTML the model writes is text to show, not markup to run.
      html(token) {
        return escapeHtml(token.text);
      },
      image(token) {
        return escapeHtml(token.text || token.href || "");
      },
    },
  });

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });

  const PURIFY = { USE_PROFILES: { html: true }, FORBID_TAGS: ["img", "style", "form", "input", "button"] };

  function renderMarkdown(container, text) {
    container.innerHTML = DOMPurify.sanitize(marked.parse(text), PURIFY);
    for (const code of container.querySelectorAll("pre > code")) decorateCode(code);
  }

  // A fenced block gets a bar with its language and a copy button.
  function decorateCode(code) {
    const pre = code.parentElement;
    const lang = ((code.className || "").match(/language-([\w+#.-]+)/) || [])[1] || "";
    const bar = el("div", "code-bar");
    bar.appendChild(el("span", "code-lang", lang || "code"));
    const copy = el("button", "copy", "Copy");
    copy.type = "button";
    copy.title = "Copy the code";
    copy.addEventListener("click", () => copyText(code.textContent.replace(/\n$/, ""), copy));
    bar.appendChild(copy);
    const wrap = el("div", "code-block");
    pre.replaceWith(wrap);
    wrap.appendChild(bar);
    wrap.appendChild(pre);
  }

  async function copyText(text, button) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      const area = el("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try {
        ok = document.execCommand("copy");
      } catch (_) {
        ok = false;
      }
      area.remove();
    }
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  }

  function metaText(msg) {
    const bits = [];
    if (msg.provider) bits.push("answered by " + msg.provider);
    if (msg.model) bits.push(msg.model);
    if (msg.finish === "length") bits.push("cut at " + MAX_TOKENS + " tokens");
    if (msg.stopped) bits.push("stopped");
    return bits.join(" · ");
  }

  function actionButton(label, title, onClick) {
    const b = el("button", "action", label);
    b.type = "button";
    b.title = title;
    b.addEventListener("click", onClick);
    return b;
  }

  function renderMessage(msg, index) {
    const node = el("article", "message " + (msg.role === "user" ? "user" : "assistant"));
    node.dataset.index = String(index);
    node.appendChild(el("div", "role", msg.role === "user" ? "You" : "Assistant"));
    const content = el("div", "content");
    if (msg.role === "user") {
      content.appendChild(el("p", "", msg.content));
    } else {
      renderMarkdown(content, msg.content || "");
    }
    node.appendChild(content);
    const meta = el("div", "meta", metaText(msg));
    if (!meta.textContent) meta.hidden = true;
    node.appendChild(meta);
    const error = el("div", "error", msg.error || "");
    error.setAttribute("role", "alert");
    error.hidden = !msg.error;
    node.appendChild(error);
    const actions = el("div", "actions");
    const last = index === messages.length - 1;
    if (msg.role === "user") {
      actions.appendChild(actionButton("Edit", "Edit this message and send it again", () => startEdit(node, index)));
      if (last) actions.appendChild(actionButton("Retry", "Ask again", () => regenerate()));
    } else if (last) {
      const label = msg.error ? "Retry" : "Regenerate";
      actions.appendChild(actionButton(label, "Ask for a new answer to the last message", () => regenerate()));
    }
    if (actions.childElementCount) node.appendChild(actions);
    return node;
  }

  // Edit in place: the message becomes a text box; sending it drops everything after it and asks again.
  function startEdit(node, index) {
    if (controller) return;
    const content = node.querySelector(".content");
    const actions = node.querySelector(".actions");
    const box = el("textarea", "edit-box");
    box.value = messages[index].content;
    box.rows = Math.min(12, Math.max(2, box.value.split("\n").length));
    box.setAttribute("aria-label", "Edit message");
    const save = actionButton("Send", "Send the edited message", () => {
      const text = box.value.trim();
      if (!text) return;
      messages = messages.slice(0, index);
      ask(text);
    });
    save.classList.add("primary");
    const cancel = actionButton("Cancel", "Keep the message as it was", () => renderAll());
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save.click();
      } else if (event.key === "Escape") {
        cancel.click();
      }
    });
    content.replaceChildren(box);
    if (actions) actions.replaceChildren(save, cancel);
    else node.appendChild(el("div", "actions")).append(save, cancel);
    box.focus();
  }

  // A new answer to the last user message (the old answer, if any, is replaced).
  function regenerate() {
    if (controller) return;
    while (messages.length && messages[messages.length - 1].role !== "user") messages.pop();
    const question = messages.pop();
    if (question) ask(question.content);
  }

  function renderAll() {
    els.conversation.replaceChildren(els.empty);
    els.empty.hidden = messages.length > 0;
    messages.forEach((msg, i) => els.conversation.appendChild(renderMessage(msg, i)));
    scrollDown();
  }

  function scrollDown() {
    els.conversation.scrollTop = els.conversation.scrollHeight;
  }

  function showStatus(text) {
    els.status.textContent = text || "";
    els.status.hidden = !text;
  }

  // -- API ---------------------------------------------------------------------------------------------------

  // An error answer as one readable line: what went wrong, in the gateway's words, and what to do about it.
  async function errorText(response) {
    let detail = "";
    let code = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        detail = String(body.error.message || "");
        code = String(body.error.code || "");
      } else {
        detail = JSON.stringify(body);
      }
    } catch (_) {
      detail = response.statusText || "";
    }
    let hint = "";
    if (response.status === 401) hint = "Enter the gateway's API key above.";
    else if (code === "upstream_authentication_error") hint = "The gateway's key for that provider was refused: tell whoever runs it.";
    else if (code === "model_not_found") hint = "Pick another model.";
    else if (response.status === 429) hint = "Wait a moment and try again.";
    return "Error " + response.status + (detail ? ": " + detail : "") + (hint ? " " + hint : "");
  }

  async function loadModels() {
    let response;
    try {
      response = await fetch("/v1/models", { headers: headers() });
    } catch (e) {
      showStatus("Cannot reach the gateway: " + e.message);
      return;
    }
    if (response.status === 401) {
      els.keyPanel.hidden = false;
      els.keyInput.focus();
      showStatus(await errorText(response));
      return;
    }
    if (!response.ok) {
      showStatus(await errorText(response));
      return;
    }
    els.keyPanel.hidden = true;
    showStatus("");
    const data = await response.json();
    const models = (data.data || []).map((m) => ({ id: String(m.id), owner: String(m.owned_by || "") }));
    // Grouped by who serves them: routes (failover chains) first, then each provider.
    const groups = new Map();
    for (const m of models) {
      const label = m.owner === "polychat" ? "Routes (with failover)" : m.owner || "other";
      if (!groups.has(label)) groups.set(label, []);
      groups.get(label).push(m);
    }
    els.model.replaceChildren();
    for (const [label, list] of groups) {
      const group = el("optgroup");
      group.label = label;
      for (const m of list) {
        const option = el("option", "", m.id);
        option.value = m.id;
        group.appendChild(option);
      }
      els.model.appendChild(group);
    }
    const ids = models.map((m) => m.id);
    const saved = localStorage.getItem(MODEL_STORE);
    if (saved && ids.includes(saved)) els.model.value = saved;
    if (!ids.length) showStatus("This gateway lists no models: check its configuration (polychat providers).");
  }

  function setBusy(busy) {
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    els.model.disabled = busy;
    els.newChat.disabled = busy;
    for (const b of els.conversation.querySelectorAll(".actions button")) b.disabled = busy;
  }

  // Reads an SSE body: calls onEvent(data) per event; resolves true when [DONE] arrived.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) {
            const payload = data.join("\n");
            data = [];
            if (payload === "[DONE]") return true;
            onEvent(payload);
          }
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
      }
    }
    return false;
  }

  async function ask(text) {
    const model = els.model.value;
    messages.push({ role: "user", content: text });
    const answer = { role: "assistant", content: "", model: model };
    messages.push(answer);
    save();
    renderAll();
    const node = els.conversation.lastElementChild;
    const content = node.querySelector(".content");
    const meta = node.querySelector(".meta");
    const error = node.querySelector(".error");
    node.classList.add("streaming");

    let pending = false;
    const paint = () => {
      pending = false;
      renderMarkdown(content, answer.content);
      meta.textContent = metaText(answer);
      meta.hidden = !meta.textContent;
      scrollDown();
    };
    const schedule = () => {
      if (!pending) {
        pending = true;
        requestAnimationFrame(paint);
      }
    };
    const fail = (text) => {
      answer.error = text;
      error.textContent = text;
      error.hidden = false;
    };

    controller = new AbortController();
    setBusy(true);
    const history = messages
      .slice(0, -1)
      .filter((m) => !(m.role === "assistant" && !m.content))
      .map((m) => ({ role: m.role, content: m.content }));
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ model: model, messages: history, stream: true, max_tokens: MAX_TOKENS }),
        signal: controller.signal,
      });
      if (response.status === 401) els.keyPanel.hidden = false;
      if (!response.ok) {
        fail(await errorText(response));
      } else {
        answer.provider = response.headers.get("x-polychat-provider") || undefined;
        const finished = await readEvents(response, (payload) => {
          let chunk;
          try {
            chunk = JSON.parse(payload);
          } catch (_) {
            return;
          }
          if (chunk && chunk.error) {
            fail("Error: " + (chunk.error.message || JSON.stringify(chunk.error)));
            return;
          }
          for (const choice of (chunk && chunk.choices) || []) {
            if (choice.index !== 0) continue;
            if (choice.delta && typeof choice.delta.content === "string") answer.content += choice.delta.content;
            if (choice.finish_reason) answer.finish = choice.finish_reason;
          }
          if (chunk && chunk.model) answer.model = chunk.model;
          schedule();
        });
        if (!finished && !answer.error) fail("The answer was cut short (the connection ended early).");
      }
    } catch (e) {
      if (e.name === "AbortError") {
        answer.stopped = true;
      } else {
        fail("Request failed: " + e.message);
      }
    } finally {
      controller = null;
      if (answer.stopped && !answer.content && !answer.error) {
        // Stopped before the first word: no empty bubble; the question stays, with Edit and Retry.
        messages.pop();
        save();
        renderAll();
      } else {
        node.classList.remove("streaming");
        paint();
        save();
        renderAll(); // the actions (Regenerate, Edit) now that the answer is complete
      }
      setBusy(false);
      els.prompt.focus();
    }
  }

  // -- events ------------------------------------------------------------------------------------------------

  els.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = els.prompt.value.trim();
    if (!text || controller) return;
    els.prompt.value = "";
    ask(text);
  });

  els.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      els.composer.requestSubmit();
    }
  });

  els.stop.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  els.newChat.addEventListener("click", () => {
    messages = [];
    save();
    renderAll();
    els.prompt.focus();
  });

  els.model.addEventListener("change", () => {
    localStorage.setItem(MODEL_STORE, els.model.value);
  });

  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, els.keyInput.value.trim());
    els.keyInput.value = "";
    loadModels();
  });

  renderAll();
  loadModels();
})();
