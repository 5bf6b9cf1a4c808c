// ihub console: progressive enhancement only. Every page works without this file.
"use strict";

// Copy buttons: <button data-copy="#element-id">. Copies an input's value or an element's text.
function copyTarget(button) {
  const target = document.querySelector(button.dataset.copy);
  if (!target) return;
  const text = "value" in target ? target.value : target.textContent;
  const done = () => {
    const label = button.textContent;
    button.textContent = "Copied";
    button.classList.add("copied");
    setTimeout(() => { button.textContent = label; button.classList.remove("copied"); }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => { selectText(target); });
  } else {
    selectText(target);
    done();
  }
}

function selectText(target) {
  if ("select" in target) { target.select(); document.execCommand("copy"); return; }
  const range = document.createRange();
  range.selectNodeContents(target);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  document.execCommand("copy");
}

// Downloads of a value shown once (a generated private key): <button data-download="#id" data-filename="x.pem">.
function downloadTarget(button) {
  const target = document.querySelector(button.dataset.download);
  if (!target) return;
  const text = "value" in target ? target.value : target.textContent;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/x-pem-file" }));
  link.download = button.dataset.filename || "download.txt";
  document.body.appendChild(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 0);
}

document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) { event.preventDefault(); copyTarget(copy); return; }
  const download = event.target.closest("[data-download]");
  if (download) { event.preventDefault(); downloadTarget(download); }
});

// Destructive forms ask first: <form data-confirm="Delete it?">.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// Live refresh of a page that shows something still running: <main data-refresh="3">.
document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-refresh]");
  if (!live) return;
  const seconds = Math.max(1, Number(live.dataset.refresh) || 3);
  setTimeout(() => {
    // Not while someone is typing into a form on the page.
    if (document.activeElement && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
      setTimeout(() => window.location.reload(), seconds * 1000);
    } else {
      window.location.reload();
    }
  }, seconds * 1000);
});
