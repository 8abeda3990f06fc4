// The home page's two helpers: the copy button and the address look-up.
// The page works without them. Every word shown is in the page itself
// (elements with data-state and data-slot); this script only shows them
// and fills in text with textContent, never as HTML.
"use strict";

(function () {
  var ALIAS = /^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$/;
  var KEY = /^[A-Za-z0-9_-]{43}$/;

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain http on another host: the older way, through a selection.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var done = false;
      try {
        done = document.execCommand("copy");
      } catch (e) {
        done = false;
      }
      document.body.removeChild(area);
      if (done) {
        resolve();
      } else {
        reject(new Error("copy refused"));
      }
    });
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    var done = document.getElementById(button.getAttribute("data-done"));
    var failed = document.getElementById(button.getAttribute("data-failed"));
    if (!source) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      done.hidden = true;
      failed.hidden = true;
      copyText(source.textContent.trim()).then(
        function () {
          done.hidden = false;
        },
        function () {
          failed.hidden = false;
          window.getSelection().selectAllChildren(source);
        }
      );
    });
  });

  var form = document.getElementById("lookup-form");
  var result = document.getElementById("lookup-result");
  if (!form || !result) {
    return;
  }
  var input = document.getElementById("lookup-alias");
  var server = form.getAttribute("data-server");

  // Shows the one result element for `state`, its slots filled with `slots`.
  function show(state, slots) {
    result.querySelectorAll("[data-state]").forEach(function (element) {
      element.hidden = element.getAttribute("data-state") !== state;
    });
    var shown = result.querySelector('[data-state="' + state + '"]');
    Object.keys(slots || {}).forEach(function (name) {
      shown.querySelectorAll('[data-slot="' + name + '"]').forEach(function (slot) {
        slot.textContent = slots[name];
      });
    });
    return shown;
  }

  // The fingerprint `homing whois` prints (federation-spec/identity.md):
  // the first 10 bytes of SHA-256 over the key's base64url text, in hex,
  // in groups of four digits.
  function fingerprint(key) {
    if (!window.crypto || !window.crypto.subtle) {
      return Promise.resolve(null);
    }
    var bytes = new TextEncoder().encode(key);
    return window.crypto.subtle.digest("SHA-256", bytes).then(function (digest) {
      var hex = Array.prototype.map
        .call(new Uint8Array(digest).slice(0, 10), function (b) {
          return ("0" + b.toString(16)).slice(-2);
        })
        .join("");
      return hex.match(/.{4}/g).join(" ");
    });
  }

  // The key itself in groups of four characters, easier to read aloud.
  function grouped(key) {
    return key.match(/.{1,4}/g).join(" ");
  }

  var pending = 0;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var alias = input.value.trim().toLowerCase();
    var at = alias.lastIndexOf("@");
    if (at >= 0) {
      var named = alias.slice(at + 1);
      if (named !== server.toLowerCase()) {
        show("elsewhere", { server: named });
        return;
      }
      alias = alias.slice(0, at);
    }
    if (!ALIAS.test(alias) || alias.indexOf("..") >= 0) {
      show("invalid");
      return;
    }
    var address = alias + "@" + server;
    var ticket = ++pending;
    show("busy");
    fetch("/.well-known/homing/identity/" + encodeURIComponent(alias), {
      headers: { Accept: "application/json" },
      credentials: "omit",
    })
      .then(function (response) {
        if (response.status === 404) {
          return { state: "unknown" };
        }
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json().then(function (doc) {
          if (!doc || typeof doc.account_key !== "string" || !KEY.test(doc.account_key)) {
            throw new Error("not an identity document");
          }
          return fingerprint(doc.account_key).then(function (print) {
            return { state: "found", key: doc.account_key, print: print };
          });
        });
      })
      .then(function (answer) {
        if (ticket !== pending) {
          return; // a newer look-up is under way
        }
        if (answer.state === "unknown") {
          show("unknown", { address: address });
          return;
        }
        var found = show("found", {
          address: address,
          fingerprint: answer.print || "",
          key: grouped(answer.key),
        });
        found.querySelector('[data-slot="fingerprint"]').hidden = !answer.print;
        found.querySelector("[data-slot-unavailable]").hidden = !!answer.print;
        // Without a fingerprint, the key itself is what to compare.
        found.querySelector("details").open = !answer.print;
      })
      .catch(function () {
        if (ticket === pending) {
          show("failed");
        }
      });
  });
})();
