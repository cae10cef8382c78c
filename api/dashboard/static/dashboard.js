// Progressive enhancement only: every page works without this file.
"use strict";

// Ask before forms that cannot be undone (data-confirm="question").
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// Upload with a progress bar; the server's answer (a redirect, or the form with its errors) replaces the page.
for (const form of document.querySelectorAll("form[data-upload]")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const progress = form.querySelector("progress");
    const status = form.querySelector(".upload-status");
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      progress.hidden = false;
      progress.value = Math.round((100 * e.loaded) / e.total);
      status.textContent = `Uploading: ${progress.value} %`;
    });
    request.addEventListener("load", () => {
      if (request.status < 400) {
        window.location.assign(request.responseURL);
      } else {
        document.open();
        document.write(request.responseText);
        document.close();
      }
    });
    request.addEventListener("error", () => { status.textContent = "The upload failed: try again."; });
    form.querySelector("button[type=submit]").disabled = true;
    request.send(new FormData(form));
  });
}

// While contents are being indexed, refresh the library to show their new status.
if (document.querySelector("table[data-library] tr[data-status=processing]")) {
  window.setTimeout(() => window.location.reload(), 2000);
}

// "Add another trigger": copy the last row with the next index and empty values.
const addTrigger = document.querySelector("[data-add-trigger]");
if (addTrigger) {
  addTrigger.hidden = false;
  addTrigger.addEventListener("click", () => {
    const rows = document.querySelectorAll("[data-trigger-row]");
    const last = rows[rows.length - 1];
    const copy = last.cloneNode(true);
    const index = rows.length;
    copy.classList.remove("invalid");
    copy.id = `f-triggers-${index}`;
    for (const element of copy.querySelectorAll("[name], [id], [for], [aria-describedby]")) {
      for (const attribute of ["name", "id", "for", "aria-describedby"]) {
        const value = element.getAttribute(attribute);
        if (value) element.setAttribute(attribute, value.replace(/triggers([.-])\d+/g, `triggers$1${index}`));
      }
      if ("value" in element && element.tagName !== "OPTION") element.value = "";
      element.removeAttribute("aria-invalid");
    }
    for (const error of copy.querySelectorAll(".error")) error.remove();
    last.after(copy);
    copy.querySelector("select").focus();
  });
}

// After a refused form, take the keyboard to the list of what to fix.
const summary = document.getElementById("error-summary");
if (summary) summary.focus();
