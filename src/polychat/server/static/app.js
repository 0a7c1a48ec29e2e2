// polychat chat page: talks to this gateway's OpenAI-compatible API; no build step, no dependencies.
//
// Safety rule: model output is only ever put in the page as text (textContent / text nodes). A small markdown
// subset (fenced code, inline code, **bold**, paragraphs) is built from DOM nodes; nothing is parsed as HTML.
"use strict";

(() => {
  const STORE = "polychat.conversation.v1";
  const MODEL_STORE = "polychat.model";
  const KEY_STORE = "polychat.apiKey"; // sessionStorage: gone when the tab closes

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

  // Inline markdown: `code` and **bold**, as text nodes inside elements.
  function inline(parent, text) {
    const re = /(`[^`\n]+`|\*\*[^*\n]+\*\*)/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      const token = m[0];
      if (token.startsWith("`")) parent.appendChild(el("code", "", token.slice(1, -1)));
      else parent.appendChild(el("strong", "", token.slice(2, -2)));
      last = m.index + token.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // Block markdown: ``` fences become <pre><code>, other text becomes paragraphs (line breaks kept by CSS).
  function renderMarkdown(container, text) {
    container.replaceChildren();
    const parts = text.split(/^```[^\n]*\n?/m);
    parts.forEach((part, i) => {
      if (i % 2 === 1) {
        const pre = el("pre");
        pre.appendChild(el("code", "", part.replace(/\n$/, "")));
        container.appendChild(pre);
        return;
      }
      for (const para of part.split(/\n{2,}/)) {
        if (!para.trim()) continue;
        const p = el("p");
        inline(p, para.replace(/^\n+|\n+$/g, ""));
        container.appendChild(p);
      }
    });
  }

  function metaText(msg) {
    const bits = [];
    if (msg.provider) bits.push("answered by " + msg.provider);
    if (msg.model) bits.push(msg.model);
    if (msg.stopped) bits.push("stopped");
    return bits.join(" · ");
  }

  function renderMessage(msg) {
    const node = el("article", "message " + (msg.role === "user" ? "user" : "assistant"));
    node.appendChild(el("div", "role", msg.role === "user" ? "You" : "Assistant"));
    const content = el("div", "content");
    if (msg.role === "user") {
      const p = el("p", "", msg.content);
      content.appendChild(p);
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
    return node;
  }

  function renderAll() {
    els.conversation.replaceChildren(els.empty);
    els.empty.hidden = messages.length > 0;
    for (const msg of messages) els.conversation.appendChild(renderMessage(msg));
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

  async function errorText(response) {
    let detail = "";
    try {
      const body = await response.json();
      detail = body && body.error && body.error.message ? String(body.error.message) : JSON.stringify(body);
    } catch (_) {
      detail = response.statusText || "";
    }
    return "Error " + response.status + (detail ? ": " + detail : "");
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
    const ids = (data.data || []).map((m) => String(m.id));
    els.model.replaceChildren();
    for (const id of ids) {
      const option = el("option", "", id);
      option.value = id;
      els.model.appendChild(option);
    }
    const saved = localStorage.getItem(MODEL_STORE);
    if (saved && ids.includes(saved)) els.model.value = saved;
  }

  function setBusy(busy) {
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    els.model.disabled = busy;
    els.newChat.disabled = busy;
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
        body: JSON.stringify({ model: model, messages: history, stream: true }),
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
            if (choice.index === 0 && choice.delta && typeof choice.delta.content === "string") {
              answer.content += choice.delta.content;
            }
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
      node.classList.remove("streaming");
      paint();
      save();
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
