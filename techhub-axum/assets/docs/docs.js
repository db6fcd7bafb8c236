// Starts Swagger UI on the document this server serves. No inline script: the page's CSP allows only files
// from this origin.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Tokens typed into "Authorize" stay in this page's memory only.
    persistAuthorization: false,
    tryItOutEnabled: false,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
