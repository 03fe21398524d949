// The idstream profile explorer (docs/explorer.md): search a person, draw its identity graph,
// list why it changed. Every value the API returns is attacker-controlled (ids, tags, attribute
// names, device data): the page builds its DOM with createElement and textContent only, never
// with markup, and the server's Content-Security-Policy allows no inline script at all.
"use strict";

(() => {
  const TOKEN_KEY = "idstream.explorer.token"; // sessionStorage: this tab only
  const SVG = "http://www.w3.org/2000/svg";
  const PROFILE_ID = /^[ap]_[0-9a-f]{20}$/;
  const IDENTITY_KINDS = { email: "email", phone: "phone", externaluserid: "externalUserId" };
  const GRAPH_LIST_MAX = 8; // identities and installs drawn per kind; the rest as "+N more"
  const NODE = { width: 210, height: 44, across: 290, down: 54 };

  const byId = (id) => document.getElementById(id);

  // --- DOM helpers: text only ------------------------------------------------------------

  function add(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (typeof child === "object") node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) add(node, child);
    return node;
  }

  function svg(tag, attributes, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, String(value));
    }
    for (const child of children) add(node, child);
    return node;
  }

  function shown(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function short(value, max) {
    const text = shown(value);
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function when(ms) {
    const date = new Date(Number(ms));
    return Number.isFinite(date.getTime()) ? date.toISOString().replace(".000Z", "Z") : shown(ms);
  }

  // An in-page link: the target only ever lands in the fragment, percent-encoded.
  function goLink(label, target) {
    const link = el("a", "ref", label);
    link.href = "#" + encodeURIComponent(target);
    return link;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function say(message, kind) {
    const status = byId("status");
    status.textContent = message || "";
    status.className = kind || "";
  }

  // --- the API -----------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askToken(message) {
    byId("token-panel").hidden = false;
    say(message, "warn");
    byId("token").focus();
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const given = token();
    if (given) headers.Authorization = "Bearer " + given;
    const url = path + (byId("raw").checked ? "?raw=1" : "");
    const response = await fetch(url, {
      headers,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    return { status: response.status, body, retryAfter: response.headers.get("Retry-After") };
  }

  function refusal(answer) {
    switch (answer.status) {
      case 401:
        askToken("The worker refused the token (401 unauthorized): enter it again.");
        return null;
      case 403:
        return "Raw values need the raw token (IDSTREAM_HTTP_RAW_TOKEN): untick “raw values” or use that token.";
      case 404:
        return "Not found.";
      case 421:
        return "This worker does not answer for the name in the address bar (421): use localhost, an IP address or a name in IDSTREAM_HTTP_ALLOWED_HOSTS.";
      case 429:
        return `Too many identity lookups (429): retry in ${shown(answer.retryAfter)} s.`;
      case 503:
        return "The worker's partitions are moving (503): retry in a moment.";
      default:
        return `The worker answered ${answer.status}.`;
    }
  }

  // --- what to look up ---------------------------------------------------------------------

  // The syntax of `idstream profile KEY`: a profile id, kind:value, install:prid, or a prid.
  function parse(text, kind) {
    const value = text.trim();
    if (kind && kind !== "auto") return { kind, value };
    const at = value.indexOf(":");
    if (at > 0) {
      const prefix = value.slice(0, at).toLowerCase();
      const rest = value.slice(at + 1);
      if (prefix in IDENTITY_KINDS) return { kind: IDENTITY_KINDS[prefix], value: rest };
      if (prefix === "profile") return { kind: "profile", value: rest };
      if (prefix === "install") return { kind: "install", value: rest };
    }
    if (PROFILE_ID.test(value)) return { kind: "profile", value };
    return { kind: "install", value };
  }

  function go(target) {
    const hash = "#" + encodeURIComponent(target);
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  async function search(event) {
    event.preventDefault();
    const query = parse(byId("search-text").value, byId("search-kind").value);
    if (!query.value) return;
    if (token() === null) {
      askToken("Enter the worker's token first (or leave it empty if it asks for none).");
      return;
    }
    if (query.kind === "profile") return go(query.value);
    if (query.kind === "install") return go("install:" + query.value);
    // An identity never goes into the address bar (nor the browser's history): its owner does.
    say("Looking up the identity …");
    const answer = await api(`/identities/${query.kind}/${encodeURIComponent(query.value)}`);
    if (answer.status !== 200) return failed(answer);
    go(answer.body.profileId);
  }

  async function route() {
    // The token is asked for once, before the first request.
    if (token() === null) {
      askToken("Enter the worker's token first (or leave it empty if it asks for none).");
      return;
    }
    const target = decodeURIComponent(location.hash.slice(1));
    if (!target) {
      byId("result").hidden = true;
      say("Search by profile id, identity or pushRegistrationId.");
      return;
    }
    let profileId = target;
    let via = null;
    if (target.startsWith("install:")) {
      via = target.slice("install:".length);
      say("Looking up the install …");
      const install = await api(`/installs/${encodeURIComponent(via)}`);
      if (install.status !== 200) return failed(install);
      if (!install.body.profileId) {
        return say("The install waits for its pool's answer to an identity event: retry.", "warn");
      }
      profileId = install.body.profileId;
    }
    say("Loading …");
    const answer = await api(`/profiles/${encodeURIComponent(profileId)}/history`);
    if (answer.status !== 200) return failed(answer);
    render(answer.body, via);
  }

  function failed(answer) {
    const message = refusal(answer);
    if (message !== null) {
      byId("result").hidden = true;
      say(message, "error");
    }
  }

  // --- rendering ---------------------------------------------------------------------------

  function render(view, via) {
    const result = byId("result");
    if (view.state === "forgotten") {
      for (const id of ["graph", "why", "profile", "timeline"]) clear(byId(id));
      clear(byId("summary")).appendChild(
        el("p", "forgotten", el("strong", null, shown(view.requested)), " was forgotten."),
      );
      result.hidden = false;
      result.className = "forgotten";
      say("");
      return;
    }
    result.className = "";
    if (view.state === "merged") {
      // Redirect: the address names the survivor from now on.
      history.replaceState(null, "", "#" + encodeURIComponent(view.profileId));
    }
    renderSummary(view, via);
    renderGraph(view);
    renderWhy(view);
    renderProfile(view.profile);
    renderTimeline(view);
    result.hidden = false;
    say("");
  }

  function renderSummary(view, via) {
    const profile = view.profile;
    const box = clear(byId("summary"));
    box.appendChild(
      el(
        "h2",
        "title",
        el("span", "pid", shown(view.profileId)),
        " ",
        el("span", "badge " + (profile.kind === "person" ? "person" : "anonymous"), shown(profile.kind)),
      ),
    );
    if (view.state === "merged") {
      box.appendChild(
        el("p", "notice", shown(view.requested), " was merged into ", shown(view.profileId), ": showing the survivor."),
      );
    }
    if (via !== null) {
      box.appendChild(el("p", "notice", "Install ", shown(via), " is linked to this profile."));
    }
    const facts = el("dl", "facts");
    const fact = (name, value) => {
      facts.appendChild(el("dt", null, name));
      facts.appendChild(el("dd", null, value));
    };
    fact("pool", shown(view.pool));
    fact("version", shown(profile.version));
    fact("created", when(profile.createdAt));
    fact("installs", shown((profile.installs || []).length));
    fact("merged in", shown((profile.mergedFrom || []).length));
    box.appendChild(facts);
  }

  // --- the identity graph: the profile, its identities and installs, the tree of merges ----

  function mergeReason(entry) {
    if (!entry) return "merged (no record kept)";
    if (entry.reason === "shared_identity") {
      return `shared ${shown(entry.identityKind)} ${shown(entry.maskedValue)}`;
    }
    if (entry.reason === "continuity") return "anonymous period (continuity)";
    return "merged";
  }

  // The graph: identities and installs to the left of the profile, the tree of the profiles
  // merged into it to the right (each merged profile's own merges further right).
  function graphParts(view) {
    const profile = view.profile;
    const ids = profile.identities || {};
    const root = { label: view.profileId, sub: profile.kind, cls: "profile", title: view.profileId };
    const left = [];
    const identities = [];
    if (ids.externalUserId !== null && ids.externalUserId !== undefined) {
      identities.push(["externalUserId", ids.externalUserId]);
    }
    for (const email of ids.emails || []) identities.push(["email", email]);
    for (const phone of ids.phones || []) identities.push(["phone", phone]);
    const listed = (items, make, what) => {
      for (const item of items.slice(0, GRAPH_LIST_MAX)) left.push(make(item));
      if (items.length > GRAPH_LIST_MAX) {
        const more = `+${items.length - GRAPH_LIST_MAX} more ${what}`;
        left.push({ label: more, sub: "", cls: "more", title: more });
      }
    };
    listed(identities, ([kind, value]) => ({
      label: value, sub: kind, cls: "identity", title: `${kind} ${shown(value)}`,
    }), "identities");
    listed(profile.installs || [], (install) => ({
      label: install.pushRegistrationId,
      sub: `install · ${shown(install.appCode)} · ${shown(install.lifecycle)}`,
      cls: "install " + shown(install.lifecycle),
      title: `install ${shown(install.pushRegistrationId)}`,
      target: "install:" + install.pushRegistrationId,
    }));
    // The tree of merges: each entry hangs under the profile it was merged into.
    const under = new Map();
    for (const entry of view.merges || []) {
      const key = String(entry.survivor);
      if (!under.has(key)) under.set(key, []);
      under.get(key).push(entry);
    }
    const seen = new Set();
    const branch = (survivor) =>
      (under.get(survivor) || []).map((entry) => {
        seen.add(String(entry.loser));
        const reason = mergeReason(entry);
        return {
          label: entry.loser,
          sub: reason,
          cls: "merged " + (String(entry.loser).startsWith("a_") ? "anonymous" : "person"),
          title: `${shown(entry.loser)} merged into ${shown(entry.survivor)}: ${reason} (event ${shown(entry.eventId)})`,
          children: branch(String(entry.loser)),
        };
      });
    const right = branch(String(view.profileId));
    for (const id of profile.mergedFrom || []) {
      if (!seen.has(String(id))) {
        right.push({ label: id, sub: mergeReason(null), cls: "merged", title: shown(id), children: [] });
      }
    }
    return { root, left, right };
  }

  function graphNode(node, x, y) {
    const box = svg("g", { class: "node " + node.cls, transform: `translate(${x},${y})` },
      svg("title", null, shown(node.title)),
      svg("rect", { width: NODE.width, height: NODE.height, rx: 7 }),
      svg("text", { x: 8, y: 18, class: "label" }, short(node.label, 26)),
      svg("text", { x: 8, y: 35, class: "sub" }, short(node.sub, 34)),
    );
    return node.target ? svg("a", { href: "#" + encodeURIComponent(node.target) }, box) : box;
  }

  function renderGraph(view) {
    const { root, left, right } = graphParts(view);
    // Rows: the left column's items; the right tree's leaves (depth: columns to the right).
    let rows = 0;
    let deepest = 0;
    (function place(nodes, depth) {
      for (const node of nodes) {
        deepest = Math.max(deepest, depth);
        node.depth = depth;
        if (node.children.length === 0) node.row = rows++;
        else {
          place(node.children, depth + 1);
          node.row = (node.children[0].row + node.children[node.children.length - 1].row) / 2;
        }
      }
    })(right, 1);
    const height = Math.max(left.length, rows, 1) * NODE.down + 20;
    const column = (n) => 10 + n * NODE.across;
    const rootColumn = left.length ? 1 : 0;
    const middle = (height - NODE.height) / 2;
    const leftTop = (height - left.length * NODE.down) / 2 + (NODE.down - NODE.height) / 2;
    const rightTop = (height - rows * NODE.down) / 2 + (NODE.down - NODE.height) / 2;
    const width = column(rootColumn + (right.length ? deepest : 0)) + NODE.width + 10;
    const drawing = svg("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "identity graph",
    });
    const edges = svg("g", { class: "edges" });
    const nodes = svg("g", { class: "nodes" });
    const rootX = column(rootColumn);
    left.forEach((node, i) => {
      const y = leftTop + i * NODE.down;
      edges.appendChild(svg("line", {
        x1: column(0) + NODE.width, y1: y + NODE.height / 2, x2: rootX, y2: middle + NODE.height / 2,
        class: "edge " + node.cls.split(" ")[0],
      }));
      nodes.appendChild(graphNode(node, column(0), y));
    });
    (function draw(children, parentX, parentY) {
      for (const node of children) {
        const x = column(rootColumn + node.depth);
        const y = rightTop + node.row * NODE.down;
        edges.appendChild(svg("line", {
          x1: parentX + NODE.width, y1: parentY + NODE.height / 2, x2: x, y2: y + NODE.height / 2,
          class: "edge merged",
        }));
        nodes.appendChild(graphNode(node, x, y));
        draw(node.children, x, y);
      }
    })(right, rootX, middle);
    nodes.appendChild(graphNode(root, rootX, middle));
    drawing.appendChild(edges);
    drawing.appendChild(nodes);
    const legend = el("p", "legend",
      el("span", "key profile", "profile"), el("span", "key identity", "identity"),
      el("span", "key install", "install"), el("span", "key merged person", "person merged in"),
      el("span", "key merged anonymous", "anonymous period merged in"));
    clear(byId("graph")).append(drawing, legend);
  }

  // --- the profile snapshot ----------------------------------------------------------------

  function table(rows, headings, className) {
    const body = el("tbody");
    for (const row of rows) body.appendChild(el("tr", null, ...row.map((cell) => el("td", null, cell))));
    const head = el("thead", null, el("tr", null, ...headings.map((h) => el("th", null, h))));
    return el("table", className || null, head, body);
  }

  function pairs(title, values) {
    const names = Object.keys(values || {}).sort();
    const box = el("div", "block", el("h3", null, title));
    if (names.length === 0) box.appendChild(el("p", "empty", "none"));
    else box.appendChild(table(names.map((name) => [name, shown(values[name])]), ["name", "value"]));
    return box;
  }

  function renderProfile(profile) {
    const box = clear(byId("profile"));
    const ids = profile.identities || {};
    const rows = [];
    if (ids.externalUserId !== null && ids.externalUserId !== undefined) {
      rows.push(["externalUserId", shown(ids.externalUserId)]);
    }
    for (const email of ids.emails || []) rows.push(["email", shown(email)]);
    for (const phone of ids.phones || []) rows.push(["phone", shown(phone)]);
    const identities = el("div", "block", el("h3", null, "Identities"));
    identities.appendChild(rows.length ? table(rows, ["kind", "value"]) : el("p", "empty", "none (anonymous)"));
    box.appendChild(identities);
    box.appendChild(pairs("Attributes", profile.attributes));
    box.appendChild(pairs("Custom attributes", profile.customAttributes));
    const tags = el("div", "block", el("h3", null, "Tags"));
    const list = el("ul", "tags");
    for (const tag of profile.tags || []) list.appendChild(el("li", "tag", shown(tag)));
    tags.appendChild((profile.tags || []).length ? list : el("p", "empty", "none"));
    box.appendChild(tags);
    const channels = profile.channels || {};
    const channelRows = [];
    for (const kind of ["emails", "phones"]) {
      for (const channel of channels[kind] || []) {
        channelRows.push([kind.slice(0, -1), shown(channel.value), channel.primary ? "primary" : ""]);
      }
    }
    for (const push of channels.push || []) {
      channelRows.push(["push", `${shown(push.pushRegistrationId)} (${shown(push.appCode)})`, push.primary ? "primary" : ""]);
    }
    const channelBox = el("div", "block", el("h3", null, "Channels"));
    channelBox.appendChild(channelRows.length ? table(channelRows, ["channel", "target", ""]) : el("p", "empty", "none"));
    box.appendChild(channelBox);
    const installs = el("div", "block", el("h3", null, "Installs"));
    const installRows = (profile.installs || []).map((install) => [
      goLink(shown(install.pushRegistrationId), "install:" + install.pushRegistrationId),
      shown(install.appCode),
      shown(install.lifecycle),
      [install.primaryDevice ? "primary" : "", install.pushEnabled ? "push" : "no push"].filter(Boolean).join(", "),
      [install.systemData && install.systemData.platform, install.systemData && install.systemData.deviceModel]
        .filter((v) => v !== undefined && v !== null).map(shown).join(" · "),
    ]);
    installs.appendChild(installRows.length
      ? table(installRows, ["pushRegistrationId", "app", "lifecycle", "flags", "device"])
      : el("p", "empty", "none"));
    box.appendChild(installs);
  }

  // --- why: every merge and every rejection kept, explained ----------------------------------

  function renderWhy(view) {
    const box = clear(byId("why"));
    const merges = el("div", "block", el("h3", null, "Why merged"));
    const mergeRows = (view.merges || []).map((entry) => [
      shown(entry.loser),
      shown(entry.survivor),
      describe(entry)[1] ? describe(entry)[1].replace(/^why: /, "") : mergeReason(entry),
      `${when(entry.eventTime)} · event ${shown(entry.eventId)}`,
    ]).reverse();
    merges.appendChild(mergeRows.length
      ? table(mergeRows, ["merged", "into", "why", "when"], "why-table merges")
      : el("p", "empty", "nothing was merged into this profile"));
    const rejected = el("div", "block", el("h3", null, "Why not attached"));
    const rejectedRows = (view.timeline || []).filter((e) => e.kind === "identity_rejected").map((entry) => [
      `${shown(entry.identityKind)} ${shown(entry.maskedValue)}`,
      describe(entry)[1].replace(/^why: /, ""),
      entry.profileId === view.profileId ? "" : `on ${shown(entry.profileId)}`,
      `${when(entry.eventTime)} · event ${shown(entry.eventId)}`,
    ]);
    rejected.appendChild(rejectedRows.length
      ? table(rejectedRows, ["identity", "why", "", "when"], "why-table rejected")
      : el("p", "empty", "no identity was rejected"));
    box.append(merges, rejected);
  }

  // --- the timeline ------------------------------------------------------------------------

  const REJECTED = {
    identity_conflict: "another person owns it and may not be merged (a different externalUserId; and updates never merge)",
    blocked_identity: "the value is on the blocklist (junk)",
    invalid_identity: "not a valid identity",
    limit_exceeded: "a per-person limit",
    not_personalized: "the install is not personalized",
  };

  function names(entry, field) {
    return (entry[field] || []).map(shown).join(", ");
  }

  function describe(entry) {
    const more = entry.more ? ` (+${entry.more} more)` : "";
    switch (entry.kind) {
      case "created":
        return [`created (${shown(entry.profileKind)})`];
      case "merged": {
        const head = `${shown(entry.loser)} merged into ${shown(entry.survivor)}`;
        if (entry.reason === "shared_identity") {
          return [head, `why: install ${shown(entry.pushRegistrationId)} personalized with ${shown(entry.identityKind)} ${shown(entry.maskedValue)}, which ${shown(entry.loser)} owned`];
        }
        if (entry.reason === "continuity") {
          return [head, `why: the anonymous period of install ${shown(entry.pushRegistrationId)} joined the person it logged in to (continuity)`];
        }
        return [head];
      }
      case "identity_added":
        return [`${shown(entry.identityKind)} ${shown(entry.maskedValue)} added`];
      case "identity_removed":
        return [`${shown(entry.identityKind)} ${shown(entry.maskedValue)} removed`];
      case "identity_rejected": {
        let why = REJECTED[entry.reason] || shown(entry.reason);
        if (entry.limit) why += `: the ${shown(entry.limit)} limit`;
        return [`${shown(entry.identityKind)} ${shown(entry.maskedValue)} not attached (${shown(entry.reason)})`, `why: ${why}`];
      }
      case "attributes_changed": {
        const parts = [];
        if ((entry.attributes || []).length) parts.push(`attributes ${names(entry, "attributes")}`);
        if ((entry.customAttributes || []).length) parts.push(`custom ${names(entry, "customAttributes")}`);
        return [`changed ${parts.join("; ")}${more}`];
      }
      case "tags_changed": {
        const added = (entry.added || []).map((t) => "+" + shown(t));
        const removed = (entry.removed || []).map((t) => "−" + shown(t));
        return [`tags ${[...added, ...removed].join(" ")}${more}`];
      }
      case "install_linked":
        return [`install ${shown(entry.pushRegistrationId)} (${shown(entry.appCode)}) linked`];
      case "install_unlinked":
        return [`install ${shown(entry.pushRegistrationId)} (${shown(entry.appCode)}) unlinked`];
      case "install_updated": {
        const lifecycle = entry.lifecycle ? `, now ${shown(entry.lifecycle)}` : "";
        return [`install ${shown(entry.pushRegistrationId)} updated: ${names(entry, "fields")}${more}${lifecycle}`];
      }
      default:
        return [shown(entry.kind)];
    }
  }

  function renderTimeline(view) {
    const box = clear(byId("timeline"));
    const list = el("ol", "timeline");
    for (const entry of view.timeline || []) {
      const [what, why] = describe(entry);
      const item = el("li", "entry " + shown(entry.kind),
        el("div", "when", when(entry.eventTime)),
        el("div", "what", el("span", "kind", shown(entry.kind)), " ", what),
      );
      if (why) item.appendChild(el("div", "why", why));
      const on = entry.profileId === view.profileId ? "" : ` on ${shown(entry.profileId)} (merged in)`;
      item.appendChild(el("div", "meta", `event ${shown(entry.eventId)} · v${shown(entry.version)}${on}`));
      list.appendChild(item);
    }
    box.appendChild((view.timeline || []).length ? list : el("p", "empty", "no history kept"));
    const kept = view.kept || {};
    const dropped = view.dropped || {};
    box.appendChild(el("p", "kept",
      `Kept: every merge, the newest ${shown(kept.rejections)} rejections and the newest ${shown(kept.changes)} other changes. ` +
      `Let go: ${shown(dropped.rejections)} older rejections, ${shown(dropped.changes)} older changes, ${shown(dropped.merges)} old anonymous periods.`));
  }

  // --- start -------------------------------------------------------------------------------

  function start() {
    byId("search").addEventListener("submit", (event) => {
      search(event).catch(broken);
    });
    byId("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, byId("token").value.trim());
      byId("token").value = "";
      byId("token-panel").hidden = true;
      route().catch(broken);
    });
    byId("token-change").addEventListener("click", () => askToken("Enter the worker's token."));
    byId("raw").addEventListener("change", () => route().catch(broken));
    window.addEventListener("hashchange", () => route().catch(broken));
    route().catch(broken);
  }

  function broken(error) {
    say(`Could not ask the worker: ${shown(error && error.message)}`, "error");
  }

  start();
})();
