// Steadyshot's live parts, in plain JavaScript (no build, no inline code: the CSP allows
// only scripts from our own origin). Everything here is an enhancement: without it the
// pages still work, they just do not update by themselves.
"use strict";

(function () {
  const POLL_MS = 1000;
  const RETRY_MS = 3000;

  // --- Live status: poll each active request and update its text and badge. ----------
  function watch(element) {
    if (element.dataset.watching) return;
    element.dataset.watching = "1";
    const url = element.dataset.statusUrl;
    let last = null;

    async function poll() {
      let data;
      try {
        const response = await fetch(url, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.status === 404 || response.status === 403) return; // deleted or gone
        if (!response.ok) throw new Error(String(response.status));
        data = await response.json();
      } catch (error) {
        setTimeout(poll, RETRY_MS);
        return;
      }
      if (data.text !== last) {
        last = data.text;
        // Only a changed text is written: the role=status region announces changes.
        const text = element.querySelector("[data-live-text]");
        if (text) text.textContent = data.text;
        const badge = element.querySelector("[data-live-badge]");
        if (badge) {
          badge.textContent = data.status_label;
          badge.className = "badge status-" + data.status;
        }
      }
      // Each new attempt appears in the detail page's timeline as it is recorded.
      const timeline = element.querySelector("[data-live-attempts]");
      if (timeline && !data.final && String(data.attempts) !== timeline.dataset.count) {
        timeline.dataset.count = String(data.attempts);
        refresh(timeline, element.dataset.swapUrl);
      }
      if (data.final) {
        // A finished request's card (or the detail page's body) is replaced by the
        // server's rendering of it, with the image, badges and actions.
        refresh(element, element.dataset.swapUrl);
      } else {
        setTimeout(poll, POLL_MS);
      }
    }
    setTimeout(poll, POLL_MS);
  }

  // The server's page at `url`, parsed; throws when it does not answer 2xx.
  async function fetchPage(url, options) {
    const response = await fetch(url, { credentials: "same-origin", ...options });
    if (!response.ok) throw new Error(String(response.status));
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  // Replace one element (found by its id) with the server's current rendering of it;
  // the page itself is not reloaded.
  async function refresh(element, url) {
    if (!url || !element.id) return;
    try {
      const doc = await fetchPage(url, { cache: "no-store" });
      const fresh = doc.getElementById(element.id);
      if (fresh && element.isConnected) {
        element.replaceWith(document.importNode(fresh, true));
        enhance(document);
      }
    } catch (error) {
      // The text already says the request ended; a reload shows the rest.
    }
  }

  // --- "Load more": append the next page instead of navigating to it. -------------------
  function loadMore(link) {
    link.addEventListener("click", async function (event) {
      event.preventDefault();
      link.setAttribute("aria-busy", "true");
      try {
        const doc = await fetchPage(link.href);
        const grid = document.getElementById("gallery-grid");
        const more = document.getElementById("gallery-more");
        const nextGrid = doc.getElementById("gallery-grid");
        const nextMore = doc.getElementById("gallery-more");
        if (grid && nextGrid) {
          for (const card of Array.from(nextGrid.children)) {
            grid.appendChild(document.importNode(card, true));
          }
        }
        if (more && nextMore) more.replaceWith(document.importNode(nextMore, true));
        enhance(document);
      } catch (error) {
        window.location.href = link.href; // fall back to the plain link
      }
    });
  }

  // --- Sizes: offer only those the chosen strategy's first model delivers. -----------
  function sizes(select) {
    const form = select.form;
    const radios = form ? form.querySelectorAll('input[name="strategy"]') : [];
    const update = function () {
      const chosen = form.querySelector('input[name="strategy"]:checked');
      const allowed = chosen && select.dataset["sizes" + camel(chosen.value)];
      if (!allowed) return;
      const ok = allowed.split(" ");
      for (const option of select.options) option.disabled = !ok.includes(option.value);
      if (select.selectedOptions[0] && select.selectedOptions[0].disabled) {
        select.value = ok[ok.length - 1];
      }
    };
    radios.forEach(function (radio) {
      radio.addEventListener("change", update);
    });
    update();
  }

  // "quality-first" -> "QualityFirst", the dataset key of data-sizes-quality-first.
  function camel(value) {
    return value.replace(/(^|-)([a-z])/g, function (_, __, c) {
      return c.toUpperCase();
    });
  }

  // --- Small helpers: prompt length counter, copy buttons. ------------------------------
  function counter(textarea) {
    const output = document.getElementById(textarea.dataset.counter);
    const limit = Number(textarea.getAttribute("maxlength")) || 0;
    if (!output || !limit) return;
    const update = function () {
      const left = limit - textarea.value.length;
      output.textContent = left + " left";
      output.classList.toggle("over", left < 0);
    };
    textarea.addEventListener("input", update);
    update();
  }

  function copyButton(button) {
    const source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", async function () {
      try {
        await navigator.clipboard.writeText(source.value || source.textContent);
        button.textContent = "Copied";
      } catch (error) {
        source.select();
      }
    });
  }

  function once(element, key, fn) {
    if (element.dataset[key]) return;
    element.dataset[key] = "1";
    fn(element);
  }

  function enhance(root) {
    root.querySelectorAll("[data-status-url]").forEach(watch);
    root.querySelectorAll("[data-load-more]").forEach((el) => once(el, "more", loadMore));
    root.querySelectorAll("textarea[data-counter]").forEach((el) => once(el, "counted", counter));
    root.querySelectorAll("[data-copy]").forEach((el) => once(el, "copyReady", copyButton));
    root.querySelectorAll("select[data-sizes-quality-first]").forEach((el) => once(el, "sized", sizes));
  }

  enhance(document);
})();
