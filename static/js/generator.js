// Steadyshot's live parts, in plain JavaScript (no build, no inline code: the CSP allows
// only scripts from our own origin). Everything here is an enhancement: without it the
// pages still work, they just do not update by themselves.
"use strict";

(function () {
  const POLL_MS = 1000;
  const RETRY_MS = 3000;

  // --- Live status: poll each active request; when anything about it changed, swap in
  // the server's fresh rendering of the whole card or page body. The server renders
  // every part (badge, placeholder, status line, attempts, cost, Cancel) from one view
  // of the request, so no part can lag behind another. -------------------------------
  function watch(element) {
    if (element.dataset.watching) return;
    element.dataset.watching = "1";
    const url = element.dataset.statusUrl;

    async function poll() {
      if (!element.isConnected) return; // replaced by a fresher rendering: it polls now
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
      if (data.version !== element.dataset.version) {
        const swapped = await refresh(element, element.dataset.swapUrl);
        if (swapped) return; // the fresh element is watched from here on
      }
      setTimeout(poll, data.final ? RETRY_MS : POLL_MS);
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
  // the page itself is not reloaded. The role=status region is kept (only its text
  // changes), so screen readers announce the new status once. True if swapped.
  async function refresh(element, url) {
    if (!url || !element.id) return false;
    try {
      const doc = await fetchPage(url, { cache: "no-store" });
      const found = doc.getElementById(element.id);
      if (!found || !element.isConnected) return false;
      const fresh = document.importNode(found, true);
      const oldLive = element.querySelector("[data-live-text]");
      const newLive = fresh.querySelector("[data-live-text]");
      if (oldLive && newLive) {
        if (oldLive.textContent !== newLive.textContent) {
          oldLive.textContent = newLive.textContent;
        }
        newLive.replaceWith(oldLive);
      }
      element.replaceWith(fresh);
      enhance(document);
      return true;
    } catch (error) {
      return false; // try again at the next poll
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
